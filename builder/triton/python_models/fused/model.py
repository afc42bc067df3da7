"""Triton Python-backend model that runs a whole ensemble in one stub: ``<task>``, ``<task>_codec``,
``<task>_fulldecode`` (and a task group's) in a ``--target local`` repository built with ``build-repo --fuse``
(the default keeps each step its own model).

Copied verbatim into the repository by the builder; ``1/steps/`` holds the ensemble's config and its step models as
the split layout would serve them, and :class:`builder.triton.chain.StepChain` builds each step from there with the
same handler and limits its own stub would use. Tensors pass between the steps in this process.
"""
import json
import os

import triton_python_backend_utils as pb_utils

from builder.triton.chain import StepChain
from builder.triton.serving import RequestLimits, respond


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        self.limits = RequestLimits.from_model_config(config)
        steps = os.path.join(args["model_repository"], args["model_version"], "steps")
        self.chain = StepChain.from_repository(
            steps, self.name,
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
        )
        pb_utils.Logger.log_info(f"{self.name}: steps {', '.join(s.name for s in self.chain.steps)} in one process")

    def execute(self, requests):
        return respond(pb_utils, requests, self.chain.inputs, self.chain.handle, self.name, pb_utils.Logger.log_warn,
                       limits=self.limits)

    def finalize(self):
        self.chain.close()
