"""Triton Python-backend model ``<task>_post``: logits -> the video's top-k labels and scores, and each frame's
top-1. Copied verbatim into the repository by the builder, next to the task's ``labels.json``; logic in
``builder.triton.task_serving.PostHandler`` (numpy only: no torch in this step)."""
import json
import os

import triton_python_backend_utils as pb_utils

from builder.triton.serving import model_parameters, respond
from builder.triton.task_serving import TAIL_LOGITS, PostHandler


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        params = model_parameters(json.loads(args["model_config"]))
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(model_dir, params.get("labels_file", "labels.json")), encoding="utf-8") as f:
            labels = json.load(f)
        self.handler = PostHandler(labels, int(params.get("top_k", "5")))

    def execute(self, requests):
        return respond(pb_utils, requests, (TAIL_LOGITS,), self.handler.handle, self.name,
                       pb_utils.Logger.log_warn)
