"""Triton Python-backend model that runs ``1/model.onnx`` with onnxruntime.

Copied verbatim into ``<repository>/<model>/1/model.py`` by ``RepositoryBuilder.add_onnx(..., runtime="python")``
for servers without the onnxruntime backend (the tritonserver of the nvidia-pytriton wheel). Inputs and outputs are
the tensors named in ``config.pbtxt``; each request is run on its own. Logic: ``builder.triton.serving.OnnxRunner``.
"""
import json
import os

import triton_python_backend_utils as pb_utils

from builder.triton.serving import OnnxRunner, RequestLimits, respond


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.limits = RequestLimits.from_model_config(config)
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        self.runner = OnnxRunner.from_model_config(
            config, model_dir,
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
        )

    def execute(self, requests):
        return respond(pb_utils, requests, self.runner.inputs, self.runner.handle, self.name, pb_utils.Logger.log_warn,
                       limits=self.limits)

