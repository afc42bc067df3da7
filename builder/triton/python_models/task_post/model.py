"""Triton Python-backend model ``<task>_post``: the backbone's raw outputs -> the task's answer (labels and scores,
boxes with labels, or captions). Copied verbatim into the repository by the builder, next to the task's
``labels.json``; the handler is the task kind's (``builder.tasks``, found by
``builder.triton.task_serving.post_handler``): classification and detection need numpy only; captioning runs BLIP's
text decoder with torch."""

import triton_python_backend_utils as pb_utils

from builder.triton.steps import served_step

KIND = "task_post"  # which step (builder.triton.steps.open_step builds it, here and in the in-process chain)


class TritonPythonModel:
    def initialize(self, args):
        self.step = served_step(KIND, args, pb_utils.Logger)

    def execute(self, requests):
        return self.step.respond(pb_utils, requests)

    def finalize(self):
        self.step.close()
