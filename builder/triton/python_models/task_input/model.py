"""Triton Python-backend model ``<task>_{nvp,fulldecode,codec}_input`` (and a task group's ``<group>_input``):
video ID + frame selection -> the tensors the next steps read (the adapted features at the injection layer, or the
backbone's preprocessed pixels; for a group, the INR prefix computed once and each task's adapted features).

Copied verbatim into the repository by the builder; the ``task``, ``mode`` and ``layer`` parameters (a group's:
``group`` and ``tasks``) say which. All request logic lives in ``builder.triton.task_serving`` and
``builder.triton.multi`` (unit-tested without Triton).
"""
import json

import triton_python_backend_utils as pb_utils

from builder.triton.serving import RequestLimits, model_parameters, respond, set_instance_threads
from builder.triton.task_serving import input_handler
from builder.triton.wire import FRAME_SELECTION, VIDEO_ID


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.logger = pb_utils.Logger
        config = json.loads(args["model_config"])
        self.limits = RequestLimits.from_model_config(config)
        self.handler = input_handler(
            model_parameters(config),
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
            log=self.logger.log_verbose,
        )
        settings = self.handler.settings
        set_instance_threads(settings.options.num_threads)  # once per instance: each runs in its own stub process
        self.logger.log_info(f"{self.name}: {self.handler.describe()} over store {settings.store_root} on "
                             f"{settings.options.device}")

    def execute(self, requests):
        return respond(pb_utils, requests, (VIDEO_ID, FRAME_SELECTION), self.handler.handle, self.name,
                       self.logger.log_warn, limits=self.limits)

    def finalize(self):
        self.handler.close()
