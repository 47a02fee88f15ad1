"""A colour per run, so the runs of an experiment tell apart in MLflow's charts and tables.

MLflow 3.17's UI colours a run by a hash of its id into a palette of about 40 shades unless the run has the tag
`mlflow.runColor` (a hex colour, which the UI reads when it loads the run): four or five runs of one experiment
often got the same or near-same colour. A new run takes the first of COLORS that no run of its experiment has yet.
"""
from __future__ import annotations

COLOR_TAG = "mlflow.runColor"
# matplotlib's tab10, then tab20's lighter shades: the order tools/compare.py --plot draws its curves in
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
          "#dbdb8d", "#9edae5")


def next_color(client, experiment_id: str) -> str:
    """The first colour of COLORS that no run of the experiment has; once all are taken, the least used."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{COLOR_TAG}` LIKE '#%'", max_results=5000)
    used = [run.data.tags.get(COLOR_TAG, "").lower() for run in runs]
    return min(COLORS, key=lambda color: (used.count(color), COLORS.index(color)))
