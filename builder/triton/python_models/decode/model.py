"""Triton Python-backend model ``decode``: video ID + frame indices -> RGB frames, from the video store.

Copied verbatim into ``<repository>/decode/1/model.py`` by ``RepositoryBuilder``. One model serves every stored
video: the INR is loaded by ID from the store named by the ``store_root`` parameter (LRU cache of ``cache_size``
decoders), so videos encoded after the server started are served without a restart. All request logic lives in
``builder.triton.decode`` (unit-tested without Triton); this file only moves tensors and errors.
"""

import triton_python_backend_utils as pb_utils

from builder.triton.steps import served_step

KIND = "decode"  # which step (builder.triton.steps.open_step builds it, here and in the in-process chain)


class TritonPythonModel:
    def initialize(self, args):
        self.step = served_step(KIND, args, pb_utils.Logger)

    def execute(self, requests):
        return self.step.respond(pb_utils, requests)

    def finalize(self):
        self.step.close()
