"""Triton Python-backend model ``decode``: video ID + frame indices -> RGB frames, from the video store.

Copied verbatim into ``<repository>/decode/1/model.py`` by ``RepositoryBuilder``. One model serves every stored
video: the INR is loaded by ID from the store named by the ``store_root`` parameter (LRU cache of ``cache_size``
decoders), so videos encoded after the server started are served without a restart. All request logic lives in
``builder.triton.decode`` (unit-tested without Triton); this file only moves tensors and errors.
"""
import json

import triton_python_backend_utils as pb_utils

from builder.triton.decode import DecodeHandler, DecodeSettings
from builder.triton.serving import RequestLimits, model_parameters, respond, set_instance_threads
from builder.triton.wire import FRAME_INDICES, VIDEO_ID


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.logger = pb_utils.Logger
        config = json.loads(args["model_config"])
        self.limits = RequestLimits.from_model_config(config)
        settings = DecodeSettings.from_parameters(
            model_parameters(config),
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
        )
        set_instance_threads(settings.num_threads)  # once per instance: each runs in its own stub process
        self.handler = DecodeHandler(settings, log=self.logger.log_verbose)
        self.logger.log_info(f"{self.name}: serving store {settings.store_root} on {settings.device} "
                             f"(cache {settings.cache_size} INRs, max {settings.max_frames} frames per request)")

    def execute(self, requests):
        return respond(pb_utils, requests, (VIDEO_ID, FRAME_INDICES), self.handler.handle, self.name,
                       self.logger.log_warn, limits=self.limits)

    def finalize(self):
        self.handler.close()

