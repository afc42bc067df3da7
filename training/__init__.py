"""Training loops and recipes (INR fitting; adapters come later). Model code lives in ``builder``."""
from .inr import FitResult, fit_inr
from .recipes import RECIPES, Recipe

__all__ = ["fit_inr", "FitResult", "RECIPES", "Recipe"]
