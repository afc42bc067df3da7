"""Triton Python-backend model ``{nvp,fulldecode,codec}_input``, one per path for every task: video ID + frame
selection -> the tensors the next steps read, for the tasks whose outputs the request asks for (the adapted
features at each task's injection layer, or its backbone's preprocessed pixels; for a group's tasks, the INR
prefix computed once).

Copied verbatim into the repository by the builder; the ``mode`` and ``tasks`` parameters say which. All request
logic lives in ``builder.triton.task_serving`` (unit-tested without Triton).
"""

import triton_python_backend_utils as pb_utils

from builder.triton.steps import served_step

KIND = "task_input"  # which step (builder.triton.steps.open_step builds it, here and in the in-process chain)


class TritonPythonModel:
    def initialize(self, args):
        self.step = served_step(KIND, args, pb_utils.Logger)

    def execute(self, requests):
        return self.step.respond(pb_utils, requests)

    def finalize(self):
        self.step.close()
