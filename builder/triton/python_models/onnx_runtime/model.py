"""Triton Python-backend model that runs ``1/model.onnx`` with onnxruntime.

Copied verbatim into ``<repository>/<model>/1/model.py`` by ``RepositoryBuilder.add_onnx(..., runtime="python")``
for servers without the onnxruntime backend (the tritonserver of the nvidia-pytriton wheel). Inputs and outputs are
the tensors named in ``config.pbtxt``; each request is run on its own. Logic: ``builder.triton.serving.OnnxRunner``.
"""

import triton_python_backend_utils as pb_utils

from builder.triton.steps import served_step

KIND = "onnx_runtime"  # which step (builder.triton.steps.open_step builds it, here and in the in-process chain)


class TritonPythonModel:
    def initialize(self, args):
        self.step = served_step(KIND, args, pb_utils.Logger)

    def execute(self, requests):
        return self.step.respond(pb_utils, requests)

    def finalize(self):
        self.step.close()
