"""Triton Python-backend model ``decode``: video ID + frame indices -> RGB frames, from the video store.

Copied verbatim into ``<repository>/decode/1/model.py`` by ``RepositoryBuilder``. One model serves every stored
video: the INR is loaded by ID from the store named by the ``store_root`` parameter (LRU cache of ``cache_size``
decoders), so videos encoded after the server started are served without a restart. All request logic lives in
``builder.triton.serving`` (unit-tested without Triton); this file only moves tensors and errors.
"""
import json

import triton_python_backend_utils as pb_utils

from builder.triton.serving import FRAME_INDICES, VIDEO_ID, DecodeHandler, DecodeSettings, error_info, model_parameters


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.logger = pb_utils.Logger
        config = json.loads(args["model_config"])
        settings = DecodeSettings.from_parameters(
            model_parameters(config),
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
        )
        self.handler = DecodeHandler(settings, log=self.logger.log_verbose)
        self.logger.log_info(f"{self.name}: serving store {settings.store_root} on {settings.device} "
                             f"(cache {settings.cache_size} INRs, max {settings.max_frames} frames per request)")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                inputs = {}
                for name in (VIDEO_ID, FRAME_INDICES):
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    inputs[name] = None if tensor is None else tensor.as_numpy()
                outputs = self.handler.handle(inputs)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]))
            except Exception as exc:  # noqa: BLE001 - one bad request must never take the model down
                code, message = error_info(exc, self.name)
                if code == "INTERNAL":
                    self.logger.log_warn(f"{self.name}: {message}")
                responses.append(pb_utils.InferenceResponse(error=_triton_error(message, code)))
        return responses

    def finalize(self):
        self.handler.close()


def _triton_error(message, code):
    code_value = getattr(pb_utils.TritonError, code, None)
    if code_value is None:  # older backends: TritonError(message) only
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code_value)
