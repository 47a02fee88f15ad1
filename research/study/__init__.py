"""A sweep's Optuna study (tools/sweep.py): the only importer of optuna, which each module loads on first use
(a trainer that is no sweep's trial never imports it)."""
