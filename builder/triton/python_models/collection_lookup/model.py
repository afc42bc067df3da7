"""Triton Python-backend model ``<collection>_decode_lookup``: member ID + frame indices
(``<collection>_<task>_lookup``: member ID + frame selection) -> the clip inputs of the collection's ONNX decoder or
task prefix (times, keyframes, distances) and each frame's place in them.

Copied verbatim into the repository by ``RepositoryBuilder``; the logic is ``builder.triton.collection_prefix``'s
``LookupHandler`` (unit-tested without Triton).
"""
import json

import triton_python_backend_utils as pb_utils

from builder.triton.collection_prefix import LookupHandler
from builder.triton.serving import RequestLimits, model_parameters, respond, set_instance_threads


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.limits = RequestLimits.from_model_config(config)
        set_instance_threads(1)  # keyframe decoding and indexing: one thread leaves the cores to the decoder
        self.handler = LookupHandler(model_parameters(config))

    def execute(self, requests):
        return respond(pb_utils, requests, self.handler.inputs, self.handler.handle, self.name,
                       pb_utils.Logger.log_warn, limits=self.limits)
