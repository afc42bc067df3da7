"""Training loops, recipes, losses and metrics (INR fitting, adapters, joint fine-tuning).

A leaf library: it imports nothing from ``builder`` (models are duck-typed through their hooks, e.g.
``fit_inputs``); ``builder`` imports ``training``, never the other way round.
"""
from .config import AdapterTrainConfig, TrainConfig
from .inr import FitResult, epoch_seconds, fit_inr
from .recipes import RECIPES, Recipe

__all__ = ["fit_inr", "epoch_seconds", "FitResult", "RECIPES", "Recipe", "TrainConfig", "AdapterTrainConfig"]
