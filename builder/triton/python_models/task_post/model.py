"""Triton Python-backend model ``<task>_post``: the backbone's raw outputs -> the task's answer (labels and scores,
boxes with labels, or captions). Copied verbatim into the repository by the builder, next to the task's
``labels.json``; the handler is the task kind's (``builder.tasks``, found by
``builder.triton.task_serving.post_handler``): classification and detection need numpy only; captioning runs BLIP's
text decoder with torch."""
import json
import os

import triton_python_backend_utils as pb_utils

from builder.triton.serving import RequestLimits, model_parameters, respond
from builder.triton.task_serving import post_handler


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.limits = RequestLimits.from_model_config(config)
        self.handler = post_handler(
            model_parameters(config),
            os.path.join(args["model_repository"], args["model_version"]),
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
        )

    def execute(self, requests):
        return respond(pb_utils, requests, self.handler.inputs, self.handler.handle, self.name,
                       pb_utils.Logger.log_warn, limits=self.limits)
