"""Training: the loop, schedules, checkpoints, one run end to end (research.train.run).

Calling the package trains a recipe: `research.train(recipe, ...)` is research.api.train.
"""
from .. import api

api.callable_module(__name__, api.train)
