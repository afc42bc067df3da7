"""Triton Python-backend model ``<collection>_decode_gather`` (and ``<collection>_<task>_gather``): per-clip tensors
of the collection's ONNX decoder or task prefix -> the requested frames.

Copied verbatim into the repository by ``RepositoryBuilder``; the logic is ``builder.triton.collection_prefix``'s
``GatherHandler`` (its parameters name the tensors).
"""

import triton_python_backend_utils as pb_utils

from builder.triton.steps import served_step

KIND = "collection_gather"  # which step (builder.triton.steps.open_step builds it, here and in the in-process chain)


class TritonPythonModel:
    def initialize(self, args):
        self.step = served_step(KIND, args, pb_utils.Logger)

    def execute(self, requests):
        return self.step.respond(pb_utils, requests)

    def finalize(self):
        self.step.close()
