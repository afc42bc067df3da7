"""Triton Python-backend model ``<collection>_decode_gather`` (and ``<collection>_<task>_gather``): per-clip tensors
of the collection's ONNX decoder or task prefix -> the requested frames.

Copied verbatim into the repository by ``RepositoryBuilder``; the logic is ``builder.triton.collection_prefix``'s
``GatherHandler`` (its parameters name the tensors).
"""
import json

import triton_python_backend_utils as pb_utils

from builder.triton.collection_prefix import GatherHandler
from builder.triton.serving import RequestLimits, model_parameters, respond


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.limits = RequestLimits.from_model_config(config)
        self.handler = GatherHandler.from_parameters(model_parameters(config))

    def execute(self, requests):
        return respond(pb_utils, requests, self.handler.inputs, self.handler.handle, self.name,
                       pb_utils.Logger.log_warn, limits=self.limits)
