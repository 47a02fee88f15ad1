"""Sweeps (tools/sweep.py, research.sweep): a spec's trials and device slots (spec.py), running them as
tools/train.py subprocesses (sweeper.py), and the summary of their results (summary.py)."""
