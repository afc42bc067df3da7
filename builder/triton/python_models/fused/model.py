"""Triton Python-backend model that runs a whole ensemble in one stub: ``<task>``, ``<task>_codec``,
``<task>_fulldecode`` (and a task group's) in a ``--target local`` repository built with ``build-repo --fuse``
(the default keeps each step its own model).

Copied verbatim into the repository by the builder; ``1/steps/`` holds the ensemble's config and its step models as
the split layout would serve them, and :class:`builder.triton.chain.StepChain` builds each step from there with the
same handler and limits its own stub would use. Tensors pass between the steps in this process.
"""

import triton_python_backend_utils as pb_utils

from builder.triton.steps import served_step

KIND = "fused"  # which step (builder.triton.steps.open_step builds it, here and in the in-process chain)


class TritonPythonModel:
    def initialize(self, args):
        self.step = served_step(KIND, args, pb_utils.Logger)

    def execute(self, requests):
        return self.step.respond(pb_utils, requests)

    def finalize(self):
        self.step.close()
