"""Training and evaluation engine: recipes, config resolution, the train loop, evaluation and checkpoints."""
from lstmvision.engine.callbacks import Callback
from lstmvision.engine.evaluate import evaluate
from lstmvision.engine.recipes import DEFAULTS, RECIPES, get_recipe
from lstmvision.engine.trainer import TrainingError, train

__all__ = ["DEFAULTS", "RECIPES", "Callback", "TrainingError", "evaluate", "get_recipe", "train"]
