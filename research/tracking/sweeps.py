"""A sweep in MLflow: one parent run (the spec as params; the summary, the plot and the best trial at the end)
and each trial a child run under it (the tag mlflow.parentRunId), which the runs table folds under the parent.
The trials' runs are the trainers' own (research.tracking.start_run); the sweep only reads them."""
from __future__ import annotations

import platform
from pathlib import Path

from .names import label
from .tags import git_state, source_tags
from .tracker import Tracker

PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"          # a run's description, which its Overview page shows as Markdown
SUMMARY_MARK = "**Summary**"
__all__ = ["PARENT_TAG", "child_tags", "continue_parent", "describe_summary", "is_sweep_parent",
           "metric_history", "remove_strays", "start_parent"]


def start_parent(experiment: str, name: str, params: dict[str, str], argv: list[str]) -> Tracker:
    """A new parent run in `experiment`, tagged with where it came from (no MXNet: the sweep trains nothing)."""
    git = git_state()
    tags = {**git, "host": platform.node(), "command": " ".join(argv), "sweep": "parent",   # is_sweep_parent
            **source_tags(argv[0] if argv else "", git["git.commit"])}
    tracker = Tracker.start(experiment, name, tags=tags, description=f"`{' '.join(argv)}` on {platform.node()}")
    tracker.log_params(params)
    return tracker


def is_sweep_parent(run) -> bool:
    """An MLflow run (entity) that is a sweep's parent run: it trained nothing itself."""
    return run.data.tags.get("sweep") == "parent"


def continue_parent(run_id: str, argv: list[str]) -> Tracker:
    """The parent run `run_id` again (RUNNING), for the same sweep command run again; disabled with
    `not_found` set when this store does not hold it."""
    import time
    tracker = Tracker.resume(run_id)
    tracker.set_tags({f"resumed.{int(time.time())}": " ".join(argv)})
    return tracker


def child_tags(parent: Tracker, trial_name: str, sweep_dir: Path,
               values: dict[str, str] | None = None) -> dict[str, str]:
    """What a trial's trainer tags its new run with (through RESEARCH_RUN_TAGS): its parent and its name (its
    `values` with the short key names, which the runs table's Run Name column shows whole)."""
    if not parent.enabled:
        return {}
    return {PARENT_TAG: parent.run_id, "mlflow.runName": label(values, short=True) if values else trial_name,
            "sweep.trial": trial_name, "sweep.dir": str(sweep_dir)}


def metric_history(parent: Tracker, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in run `run_id`, by step; a step logged twice (a resumed run) keeps its latest.
    [] when the store cannot say."""
    if not parent.enabled or not run_id:
        return []
    try:
        points = parent.client.get_metric_history(run_id, key)
    except Exception:  # noqa: BLE001 - the summary then shows '-'
        return []
    latest = {}
    for point in sorted(points, key=lambda m: m.timestamp):
        latest[point.step] = point.value
    return sorted(latest.items())


def remove_strays(parent: Tracker, keep: set[str]) -> list[str]:
    """Delete the parent's children that no trial names: a trainer killed between creating its run and
    writing run.json starts another one when it runs again. Returns the deleted ids."""
    if not parent.enabled:
        return []
    try:
        children = parent.client.search_runs([parent.experiment_id],
                                             filter_string=f"tags.`{PARENT_TAG}` = '{parent.run_id}'",
                                             max_results=10000)
        strays = [run.info.run_id for run in children if run.info.run_id not in keep]
        for run_id in strays:
            parent.client.delete_run(run_id)
    except Exception:  # noqa: BLE001 - a stray child is untidy, not wrong
        return []
    return strays


def describe_summary(parent: Tracker, markdown: str) -> None:
    """The parent run's description: the command that started it, then `markdown` (the trials' table and the best),
    which the run's Overview page shows; a summary written before (a sweep continued) is replaced."""
    if not parent.enabled:
        return
    parent.flush()
    try:
        note = parent.client.get_run(parent.run_id).data.tags.get(NOTE_TAG, "")
    except Exception:  # noqa: BLE001 - the description then holds the summary alone
        note = ""
    head = note.split(SUMMARY_MARK)[0].rstrip()
    parent.set_tags({NOTE_TAG: f"{head}\n\n{SUMMARY_MARK}\n\n{markdown}".strip()[:60000]})
