"""Training: the loop, schedules, checkpoints, one run end to end (research.training.run).

Calling the package trains a recipe: `research.train(recipe, ...)` is research.api.train (made
callable by research/__init__.py, so that this package imports nothing above it).
"""
