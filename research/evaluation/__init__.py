"""Evaluating a trained net (tools/evaluate.py): centre and 10-crop top-1 / top-5 (crops.py)."""
