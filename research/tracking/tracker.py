"""One MLflow run, logged from a background thread: a slow, locked or absent store never slows or
kills training (failures become warnings, failed metric batches are retried).
"""
from __future__ import annotations

import json
import logging
import platform
import queue
import threading
import time
from pathlib import Path
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from ..metrics import VAL_LOSS, VAL_TOP1, VAL_TOP5
from ..paths import REPO
from .colors import COLOR_TAG, next_color
from .names import changes_text, model_name, run_name, tags_from_env
from .store import get_client, get_experiment_id, public_uri, store_lock, tracking_uri
from .tags import environment_tags

if TYPE_CHECKING:
    from ..config import Recipe

log = logging.getLogger(__name__)


class Tracker:
    """One MLflow run. Never raises into the caller; a disabled tracker does nothing.

    Use `Tracker.start(...)` for a new run, `Tracker.resume(run_id)` to continue one.
    """

    def __init__(self, client=None, run_id: str | None = None, experiment_id: str | None = None):
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id
        self.not_found = False                 # Tracker.resume: the run is not in this store
        self._queue: queue.Queue = queue.Queue()
        self._failures = 0
        self._pending: list[Callable] = []     # failed metric batches, retried before the next call
        self._monitor = None                   # mlflow's SystemMetricsMonitor, started by start_system_metrics
        self._monitor_every_s, self._monitor_checked = 60.0, 0.0
        self.monitor_check_s = 600.0           # how often a stopped monitor is looked for
        self._datasets: list = []              # what log_datasets described, for log_model
        # One worker thread even when disabled, so that `flush` and `end` behave alike.
        self._worker = threading.Thread(target=self._drain, name="tracker", daemon=True)
        self._worker.start()

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    @classmethod
    def disabled(cls) -> "Tracker":
        return cls()

    @classmethod
    def start(cls, experiment: str, run_name: str, tags: dict[str, str] | None = None,
              description: str = "") -> "Tracker":
        """Create a run, in a colour no other run of the experiment has (research.tracking.colors); on any store
        failure warn and return a disabled tracker."""
        try:
            client = get_client()
            experiment_id = get_experiment_id(client, experiment)
            all_tags = {"mlflow.runName": run_name, **(tags or {})}
            if description:
                all_tags["mlflow.note.content"] = description
            with store_lock(tracking_uri()):
                all_tags.setdefault(COLOR_TAG, next_color(client, experiment_id))
                run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
            return cls(client, run.info.run_id, experiment_id)
        except Exception as err:  # noqa: BLE001 - tracking must never stop a run
            log.warning("MLflow tracking is off for this run: could not create a run at %s (%s)",
                        public_uri(tracking_uri()), err)
            return cls.disabled()

    @classmethod
    def attach(cls, run_id: str, uri: str | None = None) -> "Tracker":
        """Log to an existing run and leave its status alone (it may still be training, or long
        finished); on any store failure warn and return a disabled tracker."""
        try:
            client = get_client(uri)
            run = client.get_run(run_id)
            return cls(client, run_id, run.info.experiment_id)
        except Exception as err:  # noqa: BLE001
            log.warning("MLflow: could not open run %s at %s (%s)", run_id, public_uri(uri or tracking_uri()), err)
            return cls.disabled()

    @classmethod
    def resume(cls, run_id: str) -> "Tracker":
        """Continue an existing run: its status goes back to RUNNING."""
        from mlflow.exceptions import MlflowException
        try:
            client = get_client()
            run = client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            return cls(client, run_id, run.info.experiment_id)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":     # another store: the caller starts a new run
                tracker = cls.disabled()
                tracker.not_found = True
                return tracker
            error = err
        except Exception as err:  # noqa: BLE001
            error = err
        log.warning("MLflow tracking is off for this run: could not resume run %s at %s (%s)",
                    run_id, public_uri(tracking_uri()), error)
        return cls.disabled()

    # -- queued calls: return at once ------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):      # MLflow takes at most 100 params a batch
            self._submit(self.client.log_batch, self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int, tags: dict[str, str] | None = None,
                    after: Future | None = None) -> None:
        """Queue `metrics` at `step` (and `tags`, in the same store call). With `after` (a checkpoint's
        write), they are logged once it has succeeded and dropped if it failed."""
        if not self.enabled:
            return
        from mlflow.entities import Metric, RunTag
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        self._submit(self.client.log_batch, self.run_id, metrics=items, tags=[RunTag(k, str(v)) for k, v in
                                                                             (tags or {}).items()],
                     _retry=True, _after=after)

    def set_tags(self, tags: dict[str, str]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag
        self._submit(self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, after: Future | None = None) -> None:
        """Queue the upload of `path`; with `after` (the write that makes the file), once that has succeeded."""
        if not self.enabled:
            return
        self._submit(self.client.log_artifact, self.run_id, str(path), artifact_path, _after=after)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        self._submit(self.client.log_artifacts, self.run_id, str(folder), artifact_path)

    def start_system_metrics(self, every_s: float, resumed: bool) -> None:
        """MLflow's system metrics (system/cpu_utilization_percentage, ...; GPUs when nvidia-ml-py finds
        them), one point per metric every `every_s` seconds, on MLflow's own thread until `end`, and one at
        the start and at the end: a run shorter than `every_s` has two (MLflow's monitor alone logs none).

        Steps continue after the last logged one when `resumed`. Started from the tracker's thread:
        creating the monitor reads the run and probes for GPUs.
        """
        if self.enabled:
            self._monitor_every_s = every_s
            self._submit(self._start_monitor, resumed)

    def _start_monitor(self, resumed: bool) -> None:
        import psutil
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)   # start/stop chatter
        sampling = min(self._monitor_every_s, 15.0)
        self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=sampling,
                                             samples_before_logging=max(1, round(self._monitor_every_s / sampling)),
                                             resume_logging=resumed, tracking_uri=tracking_uri())
        psutil.cpu_percent()                         # its first call returns 0.0: the start's point is over 0.5 s
        time.sleep(0.5)
        self._publish_system_metrics()               # the start's point
        self._monitor.start()
        self._monitor_checked = time.monotonic()

    def _publish_system_metrics(self) -> None:
        """One point per system metric now: the mean of the samples the monitor holds and one taken now. Only
        while its thread is not running (before `start`, after `finish`): the samples are not locked."""
        self._monitor.collect_metrics()
        self._monitor.publish_metrics(self._monitor.aggregate_metrics())
        self._monitor.mlflow_logger.flush()

    def _keep_monitor_alive(self) -> None:
        """MLflow's monitor thread ends for good at the first failed read of the run (a store locked
        or restarting for a while): on a multi-day run, start it again (checked every 10 minutes)."""
        thread = getattr(self._monitor, "_process", None)      # the monitor's thread; None once finished
        if thread is None or time.monotonic() - self._monitor_checked < self.monitor_check_s:
            return
        self._monitor_checked = time.monotonic()
        if not thread.is_alive():
            log.warning("MLflow system metrics had stopped (the store did not answer); starting them again")
            self._start_monitor(resumed=True)

    def log_datasets(self, describe: Callable[[], list]) -> None:
        """MLflow dataset inputs (the runs table's Dataset column) from `describe()`, a list of
        research.data.describe.DatasetInfo, called on the tracker's thread (it reads the .idx files)."""
        if self.enabled:
            self._submit(self._log_datasets, describe)

    def _log_datasets(self, describe: Callable[[], list]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        self._datasets = describe()
        inputs = [DatasetInput(Dataset(d.name, d.digest, "local", json.dumps({"uri": d.source}),
                                       profile=json.dumps({"num_images": d.images, "num_classes": d.classes,
                                                           "files": d.files})),
                               tags=[InputTag("mlflow.data.context", d.context)]) for d in self._datasets]
        self.client.log_inputs(self.run_id, datasets=inputs)

    def log_model(self, model_dir: str | Path, step: int,
                  metric_keys: tuple[str, ...] = (VAL_LOSS, VAL_TOP1, VAL_TOP5)) -> None:
        """The exported model as the run's one MLflow LoggedModel (a pyfunc, research.tracking.logged_model), with
        the run's params, and its `metric_keys` at `step` linked to it (on the validation dataset input).

        A model this run logged before (a resumed or extended run) is deleted first.
        """
        if self.enabled:
            self._submit(self._log_model, Path(model_dir), step, metric_keys)

    def _log_model(self, model_dir: Path, step: int, metric_keys: tuple[str, ...]) -> None:
        import mlflow
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

        from . import logged_model
        mlflow.set_tracking_uri(tracking_uri())        # pyfunc.log_model writes to the global store
        for old in self.client.search_logged_models([self.experiment_id],
                                                    filter_string=f"source_run_id = '{self.run_id}'"):
            self.client.delete_logged_model(old.model_id)
        run = self.client.get_run(self.run_id)
        source = {k: v for k, v in run.data.tags.items() if k.startswith("mlflow.source.") or k == "mlflow.user"}
        name = model_name(run.data.tags.get("recipe", ""), run.info.run_name or "") or logged_model.ARTIFACT
        model = self.client.create_logged_model(self.experiment_id, name=name,
                                                source_run_id=self.run_id, params=run.data.params,
                                                tags=source, model_type="image-classifier")
        try:
            logged_model.log(model_dir, model.model_id, logged_model.model_requirements(), REPO / "research")
        except Exception:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=step)])
        # The same points as the run's (same timestamp: not a second point in its history), now the model's too.
        dataset = next((d for d in self._datasets if d.context == "validation"), None)
        linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id, run_id=self.run_id,
                         dataset_name=dataset and dataset.name, dataset_digest=dataset and dataset.digest)
                  for key in metric_keys for m in self.client.get_metric_history(self.run_id, key) if m.step == step]
        self.client.log_batch(self.run_id, metrics=linked)

    # -- synchronous ------------------------------------------------------------------------
    def last_step(self, key: str) -> int | None:
        """The largest step logged for `key` (one read, not the whole history); None if none."""
        if not self.enabled:
            return None
        self.flush()
        try:
            latest = self.client.get_run(self.run_id).data._metric_objs
            return max((m.step for m in latest if m.key == key), default=None)
        except Exception as err:  # noqa: BLE001
            log.warning("MLflow: could not read the last step of %s (%s)", key, err)
            return None

    def logged_steps(self, key: str) -> set[int]:
        """Steps at which `key` was logged already (to resume without duplicates)."""
        if not self.enabled:
            return set()
        self.flush()
        try:
            return {m.step for m in self.client.get_metric_history(self.run_id, key)}
        except Exception as err:  # noqa: BLE001
            log.warning("MLflow: could not read the history of %s (%s)", key, err)
            return set()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until queued calls are done; False if the store is still busy after timeout."""
        done = threading.Event()
        self._queue.put(done.set)
        return done.wait(timeout)

    def end(self, status: str = "FINISHED", timeout: float = 60.0) -> None:
        """Flush, then mark the run FINISHED, FAILED or KILLED."""
        if self.enabled:
            self._submit(self._stop_system_metrics)
            self._submit(self.client.set_terminated, self.run_id, status)
        if not self.flush(timeout) and self.enabled:
            log.warning("MLflow: the store did not answer within %.0f s; the run's last records may be "
                        "missing and its status may still read RUNNING", timeout)
        self._queue.put(None)

    def close(self, timeout: float = 60.0) -> None:
        """Flush and stop the worker thread, leaving the run's status alone (a run `attach` opened)."""
        if not self.flush(timeout) and self.enabled:
            log.warning("MLflow: the store did not answer within %.0f s; the last records may be missing", timeout)
        self._queue.put(None)

    def _stop_system_metrics(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()          # writes the points it still holds, not the samples since the last
            self._publish_system_metrics()  # the end's point: those samples and one more
            self._monitor = None

    def _submit(self, fn: Callable, *args, _retry: bool = False, _after: Future | None = None, **kwargs) -> None:
        if self.enabled:
            def call() -> None:
                if _after is not None and _after.exception() is not None:    # waits for it
                    return                  # the file it depends on was not written: nothing to log
                fn(*args, **kwargs)
            call.retry = _retry
            self._queue.put(call)

    def _drain(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            for pending in (self._pending.pop(0) for _ in range(len(self._pending))):
                self._call(pending)          # the store may be back: older metrics first
            self._call(call)
            self._call(self._keep_monitor_alive)

    def _call(self, call: Callable) -> None:
        try:
            call()
        except Exception as err:  # noqa: BLE001 - a tracking failure must not end training
            self._failures += 1
            if getattr(call, "retry", False) and len(self._pending) < 10000:
                self._pending.append(call)
            if self._failures <= 5 or self._failures % 100 == 0:
                log.warning("tracking call failed (%d so far), training goes on: %s", self._failures, err)


def start_run(recipe: Recipe, contexts: list, argv: list[str], tags: dict[str, str] | None = None) -> Tracker:
    """A new run in the recipe's experiment, named by what differs from its recipe file (research.tracking.names;
    a sweep's trial: by its values), tagged and described by its command, the recipe's values logged as params.

    `tags`, and those of RESEARCH_RUN_TAGS (a sweep's mlflow.parentRunId), are added to the environment's."""
    extra = {**tags_from_env(), **(tags or {})}
    name = extra.pop("mlflow.runName", "") or run_name(recipe)
    tracker = Tracker.start(recipe.tracking.experiment or recipe.name, name,
                            tags={**environment_tags(contexts, argv), "recipe": recipe.name, **extra},
                            description=f"`{' '.join(argv)}` on {platform.node()}")
    tracker.log_params(recipe.flat())
    return tracker


def resume_run(run_id: str, history: list[dict[str, float]], argv: list[str]) -> Tracker:
    """Continue run `run_id`, re-logging the epochs of `history` it lacks (killed between checkpoint and log)."""
    tracker = Tracker.resume(run_id)
    logged = tracker.logged_steps(VAL_TOP1)
    for entry in history:
        if entry["epoch"] not in logged:
            tracker.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=entry["epoch"])
    tracker.set_tags({f"resumed.{int(time.time())}": " ".join(argv)})
    return tracker


def record_changes(tracker: Tracker, changes: dict[str, tuple[Any, Any]], epoch: int, recipe: Recipe,
                   argv: list[str]) -> None:
    """A run continued with recipe values it did not start with (train.epochs extended; anything else with --resume).
    MLflow keeps the params a run was started with, so the change is a tag `recipe.changed.<time>` ('at epoch 2:
    train.lr 0.02 -> 0.05'), the run's name what differs from the recipe file now, and a line of its description."""
    if not tracker.enabled or not changes:
        return
    text = f"at epoch {epoch}: {changes_text(changes)}"
    try:
        note = tracker.client.get_run(tracker.run_id).data.tags.get("mlflow.note.content", "")
    except Exception:  # noqa: BLE001 - the description then holds the change alone
        note = ""
    line = f"Continued {text}, by `{' '.join(argv)}`"
    tracker.set_tags({f"recipe.changed.{int(time.time())}": text[:5000], "mlflow.runName": run_name(recipe),
                      "mlflow.note.content": f"{note}\n\n{line}".strip()[:60000]})
    log.info("the recipe changed %s: recorded in MLflow run %s", text, tracker.run_id)
