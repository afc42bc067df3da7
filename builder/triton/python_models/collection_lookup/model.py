"""Triton Python-backend model ``<collection>_decode_lookup``: member ID + frame indices
(``<collection>_<task>_lookup``: member ID + frame selection) -> the clip inputs of the collection's ONNX decoder or
task prefix (times, keyframes, distances) and each frame's place in them.

Copied verbatim into the repository by ``RepositoryBuilder``; the logic is ``builder.triton.collection_prefix``'s
``LookupHandler`` (unit-tested without Triton).
"""

import triton_python_backend_utils as pb_utils

from builder.triton.steps import served_step

KIND = "collection_lookup"  # which step (builder.triton.steps.open_step builds it, here and in the in-process chain)


class TritonPythonModel:
    def initialize(self, args):
        self.step = served_step(KIND, args, pb_utils.Logger)

    def execute(self, requests):
        return self.step.respond(pb_utils, requests)

    def finalize(self):
        self.step.close()
