"""Triton Python-backend model ``<collection>_gather``: the collection decoder's RGB clips -> the requested frames.

Copied verbatim into the repository by ``RepositoryBuilder``; the logic is ``builder.triton.collection_prefix``'s
``gather_handle``.
"""
import json

import triton_python_backend_utils as pb_utils

from builder.triton.collection_prefix import CLIP_POS, CLIP_RGB, CLIP_ROW, gather_handle
from builder.triton.serving import RequestLimits, respond


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.limits = RequestLimits.from_model_config(json.loads(args["model_config"]))

    def execute(self, requests):
        return respond(pb_utils, requests, (CLIP_RGB, CLIP_ROW, CLIP_POS), gather_handle, self.name,
                       pb_utils.Logger.log_warn, limits=self.limits)
