"""The one place pytorchvideo 0.1.5 is imported.

pytorchvideo 0.1.5 imports ``torchvision.transforms.functional_tensor``, which torchvision
renamed to ``_functional_tensor`` (0.17+). Registering the old name as an alias before the first
pytorchvideo import keeps ``pytorchvideo.transforms`` importable; the models need nothing else.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

__all__ = ["pytorchvideo", "KINETICS_MEAN", "KINETICS_STD"]

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


def pytorchvideo(submodule: str = "") -> ModuleType:
    """``import pytorchvideo[.submodule]`` with the torchvision alias in place."""
    name = "torchvision.transforms.functional_tensor"
    if name not in sys.modules:
        sys.modules[name] = importlib.import_module("torchvision.transforms._functional_tensor")
    with warnings.catch_warnings():  # fvcore/pytorchvideo call the deprecated torch.jit.script at import
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        return importlib.import_module("pytorchvideo" + (f".{submodule}" if submodule else ""))
