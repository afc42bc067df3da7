"""Triton Python-backend model that runs ``1/model.onnx`` with onnxruntime.

Copied verbatim into ``<repository>/<model>/1/model.py`` by ``RepositoryBuilder.add_onnx(..., runtime="python")``
for servers without the onnxruntime backend (the tritonserver of the nvidia-pytriton wheel). Inputs and outputs are
the tensors named in ``config.pbtxt``; each request is run on its own. Logic: ``builder.triton.serving.OnnxRunner``.
"""
import json
import os

import triton_python_backend_utils as pb_utils

from builder.triton.serving import OnnxRunner, error_info


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        self.runner = OnnxRunner.from_model_config(
            config, model_dir,
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                inputs = {}
                for name in self.runner.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    inputs[name] = None if tensor is None else tensor.as_numpy()
                outputs = self.runner.handle(inputs)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]))
            except Exception as exc:  # noqa: BLE001 - one bad request must never take the model down
                code, message = error_info(exc, self.name)
                if code == "INTERNAL":
                    pb_utils.Logger.log_warn(f"{self.name}: {message}")
                responses.append(pb_utils.InferenceResponse(error=_triton_error(message, code)))
        return responses


def _triton_error(message, code):
    code_value = getattr(pb_utils.TritonError, code, None)
    if code_value is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code_value)
