"""The library API for notebooks and scripts: research.train, research.sweep, research.load_run, research.compare.

The same code paths as tools/train.py, tools/predict.py and tools/compare.py; user errors raise
UserError with the message the tools print. Cheap to import: mxnet and mlflow load on first use.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence

from .cli import RESUME_MODES, Resume
from .errors import UserError, signal_of
from .metrics import VAL_TOP1
from .rundir.files import CHECKPOINTS, MODEL, RECIPE

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from .config import Recipe
    from .model.predict import Predictor



class Run:
    """A run directory read back: what the run trained, its per-epoch history and its model.

    Attributes load on first use and are cached; `load_run` (or `train`) makes one.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._recipe: Recipe | None = None
        self._checkpoint: dict | None = None
        self._predictor: Predictor | None = None
        self._net = None

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    @property
    def recipe(self) -> Recipe:
        """The recipe the run trained (its run_dir/recipe.yaml, overrides applied)."""
        if self._recipe is None:
            from .config import load_recipe
            self._recipe = load_recipe(self.run_dir / RECIPE)
        return self._recipe

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (from run.json), None for a run trained without tracking."""
        from .rundir.run_json import read_run_json
        return read_run_json(self.run_dir).run_id

    @property
    def status(self) -> str | None:
        """"running", "finished", "killed" or "failed" as its status.json says (None without one; "unreadable"
        for a damaged one); tools/status.py also tells a dead "running" apart."""
        from .rundir.status import run_state
        return run_state(self.run_dir)

    @property
    def history(self):
        """One row per epoch (epoch, train/loss, val/top1, ...): a pandas DataFrame indexed by epoch,
        or a list of dicts without pandas. Read from the newest checkpoint, so it is what a resume
        continues from."""
        rows = [dict(entry) for entry in self._latest()["state"].history] if self._latest() else []
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows, columns=None if rows else ["epoch"]).set_index("epoch")

    @property
    def net(self):
        """The final weights, loaded on first use: the exported model (a SymbolBlock on the CPU, what
        `predict` runs) for a finished run, else the recipe's net with the newest checkpoint's weights."""
        if self._net is None:
            if (self.run_dir / MODEL).is_dir():
                self._net = self._predictor_or_load().net
            else:
                self._net = self._checkpoint_net()
        return self._net

    def plot(self, title: str | None = None) -> Figure:
        """Loss and accuracy curves per epoch (the run's curves.png) as a matplotlib Figure."""
        from .training.plots import curves_figure
        history = [dict(entry) for entry in self._latest()["state"].history] if self._latest() else []
        if not history:
            raise UserError(f"{self.run_dir}: no epoch finished yet, so there are no curves to plot.")
        return curves_figure(history, self.recipe.name if title is None else title)

    def predict(self, images: Sequence[str | Path | np.ndarray], top: int = 5) -> list[list[tuple[str, float]]]:
        """For each image (a file, or an HxW / HxWxC uint8 array) the top (class, probability) pairs,
        most likely first; the exported model and preprocessing of tools/predict.py. An image far from the
        training images (a dark-on-white digit for a digits model) gets a research.model.input_check.UnusualInput
        warning that says so (and to invert it)."""
        from .model.predict import read_image
        predictor = self._predictor_or_load()
        channels = predictor.shape[0]
        pixels = [read_image(image, channels) if isinstance(image, (str, Path)) else image for image in images]
        names = [str(image) if isinstance(image, (str, Path)) else f"image {i}" for i, image in enumerate(images)]
        return predictor.predict_arrays(pixels, k=top, names=names)

    def _predictor_or_load(self) -> Predictor:
        if self._predictor is None:
            from .model.predict import Predictor
            self._predictor = Predictor(self.run_dir)
        return self._predictor

    def _latest(self) -> dict | None:
        if self._checkpoint is None:
            from .training.checkpoint import find_latest
            found = find_latest(self.run_dir / CHECKPOINTS)
            self._checkpoint = found[1] if found else {}
        return self._checkpoint or None

    def _checkpoint_net(self):
        import mxnet as mx

        from .evaluation.crops import load_trained
        if not self._latest():
            raise UserError(f"{self.run_dir}: no exported model and no checkpoint: the run has not trained "
                            f"an epoch yet.")
        return load_trained(self.run_dir, [mx.cpu()]).net       # the saved recipe's net, as the trainer builds it


def load_run(run_dir: str | Path) -> Run:
    """A finished or stopped run directory (runs/<recipe name>/ by default).

    Raises:
        UserError: the folder is not a run directory.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).is_file():
        raise UserError(f"{run_dir}: not a run directory (no recipe.yaml). Runs are written to runs/<recipe "
                        f"name>/ unless trained with output=... (tools/train.py --output).")
    return Run(run_dir)


def train(recipe: str | Path | Recipe, *, gpus: str | Sequence[int] | None = None,
          overrides: Mapping[str, Any] | Iterable[str] | None = None, output: str | Path | None = None,
          resume: Resume = "auto") -> Run:
    """Train (or resume) a recipe as tools/train.py does, tracked in MLflow; returns the finished Run.

    Args:
        recipe: a recipe YAML file or a loaded Recipe.
        gpus: GPU ids ("0,1" or [0, 1]); None trains on the CPU.
        overrides: {"train.lr": 0.05} or ["train.lr=0.05"], validated like --set.
        output: the run directory; default runs/<recipe name>/.
        resume: "auto" continues a checkpoint of the same recipe in `output` when there is one,
            "require" insists on one, "fresh" moves the old run directory aside first.

    Raises:
        UserError: a bad recipe, override, device or missing data (nothing was trained).
        KeyboardInterrupt: the kernel was interrupted; a checkpoint was written first and the MLflow
            run marked KILLED. Calling train again with the same arguments resumes into that run.
        NonFiniteLoss, DeadHead: the loss became NaN, or the net's outputs stopped carrying
            information (research.training.health); the run is marked FAILED, the last good checkpoint kept.
        CheckpointError: a checkpoint could not be written (a full disk); the same call resumes later.
    """
    if resume not in RESUME_MODES:
        raise UserError(f"resume={resume!r}: expected one of {', '.join(RESUME_MODES)}.")
    from .devices import set_cpu_threads
    set_cpu_threads()                        # effective only if mxnet is not imported yet
    loaded = _load(recipe, _assignments(overrides))
    spec = gpus if isinstance(gpus, str) or gpus is None else ",".join(map(str, gpus))
    call = f"research.train({str(recipe) if isinstance(recipe, (str, Path)) else loaded.name!r}, ...)"
    run_dir, code = train_recipe(loaded, spec, output, resume, [call], interactive=True)
    if signal_of(code):
        name = signal.Signals(signal_of(code)).name
        raise KeyboardInterrupt(f"{name}: stopped after a checkpoint in {run_dir}; call research.train again "
                                f"with the same arguments to resume into the same MLflow run.")
    return Run(run_dir)


def train_recipe(recipe: Recipe, gpus: str | None, output: str | Path | None, resume: Resume, argv: list[str],
                 interactive: bool = False) -> tuple[Path, int]:
    """Check the recipe against the devices, then train it (or run its transfer job) into `output`.

    Returns the run directory and the exit status tools/train.py exits with. Raises UserError first,
    before any folder is written, for what the user must fix.
    """
    from .devices import get_contexts
    from .preflight import check_recipe

    ctxs = get_contexts(gpus)
    check_recipe(recipe, ctxs)
    from .training.resume import default_run_dir
    run_dir = Path(output) if output else default_run_dir(recipe)
    if recipe.task == "transfer":
        from .transfer.job import run_transfer_job
        return run_dir, run_transfer_job(recipe, ctxs, run_dir, argv, resume, interactive)
    from .training.job import train as train_run
    return run_dir, train_run(recipe, ctxs, run_dir, argv, resume, interactive)


def sweep(recipe: str | Path, *, grid: Mapping[str, Sequence[Any]] | None = None,
          ranges: Mapping[str, str | tuple] | None = None, random: int = 0, seed: int = 0,
          overrides: Mapping[str, Any] | Iterable[str] | None = None, metric: str = VAL_TOP1,
          goal: Literal["max", "min"] | None = None, output: str | Path | None = None,
          gpus: str | Sequence[int] | None = None, gpus_per_trial: int = 1, parallel: int | None = None,
          fresh: bool = False, sampler: Literal["grid", "random", "tpe", "cmaes"] | None = None, trials: int = 0,
          prune: Literal["none", "median", "halving", "hyperband"] = "none", prune_warmup: int = 0,
          max_epochs: int = 0, max_hours: float = 0.0):
    """Train the trials of a sweep as tools/sweep.py does (each a tools/train.py process; one MLflow parent run
    with the trials under it); calling it again with the same arguments continues the sweep.

    Args:
        recipe: a recipe YAML file (each trial's trainer reads it).
        grid: {"train.lr": [0.01, 0.02], ...}: every combination (with `random`: a choice per trial).
        ranges: {"train.lr": (1e-3, 1e-1, "log")} or {"train.lr": "1e-3:1e-1:log"}: drawn for `random` trials.
        random: trials of a random search (seeded by `seed`); 0 trains the grid.
        sampler, trials: "tpe" or "cmaes" with `trials` trials: a model-based search over `ranges` (and `grid`
            values, tpe), each trial's values from the trials before it.
        prune, prune_warmup: stop the trials that fall behind ("median", "halving", "hyperband") once they have
            trained `prune_warmup` epochs (0: a tenth of their epochs).
        max_epochs, max_hours: the budget: no new trial starts once the trials trained that many epochs, or ran
            that many hours, in all (0: no limit).
        overrides: values for every trial, as in `train`.
        metric, goal: what ranks the trials (each one's best epoch); goal default min for a loss, else max.
        output: the sweep's folder; default runs/<recipe>-sweep-<keys>/.
        gpus, gpus_per_trial, parallel: the devices shared out (--gpus 0,1,2,3 --gpus-per-trial 1: four at
            once); on the CPU, `parallel` trials at once split the cores.

    Returns a research.sweeps.sweeper.SweepResult: `.rows` (one dict per trial: its values, state, best and final
    metric, run id and directory; `pandas.DataFrame(result.rows)`), `.best`, `.parent_run_id`, `.sweep_dir`.

    Raises:
        UserError: a bad option or trial recipe (nothing trained).
        KeyboardInterrupt: interrupted; every running trial checkpointed first. Call again to continue.
    """
    from .sweeps.spec import make_spec
    from .sweeps.sweeper import Budget, run_sweep

    if not isinstance(recipe, (str, Path)):
        raise UserError("research.sweep takes the recipe's file: each trial is tools/train.py on it "
                        "(values of its own through overrides=...).")
    texts = [f"{key}=" + ",".join(v if isinstance(v, str) else json.dumps(v) for v in values)
             for key, values in (grid or {}).items()]
    spans = [f"{key}=" + (span if isinstance(span, str) else ":".join(map(str, span)))
             for key, span in (ranges or {}).items()]
    spec = make_spec(str(recipe), texts, spans, random, seed, _assignments(overrides), metric, goal, sampler, trials,
                     prune, prune_warmup)
    spec_gpus = gpus if isinstance(gpus, str) or gpus is None else ",".join(map(str, gpus))
    result = run_sweep(spec, output, spec_gpus, gpus_per_trial, parallel, fresh,
                       [f"research.sweep({str(recipe)!r}, ...)"], Budget(max_epochs, max_hours))
    if signal_of(result.exit_code):
        raise KeyboardInterrupt(f"{signal.Signals(signal_of(result.exit_code)).name}: the sweep stopped, its running "
                                f"trials after a checkpoint; call research.sweep again with the same arguments to "
                                f"continue it ({result.sweep_dir}).")
    return result


def _load(recipe: str | Path | Recipe, overrides: list[str]) -> Recipe:
    from .config import load_recipe, override_recipe
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, overrides)
    return override_recipe(recipe, overrides) if overrides else recipe


def _assignments(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    """{"train.lr": 0.05} -> ["train.lr=0.05"]: values as JSON, which YAML reads back unchanged."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def compare(runs_or_experiment: str | Iterable[str | Path | Run] | None = None, *, last: int = 0):
    """The table tools/compare.py prints, one row per run, as a pandas DataFrame.

    Args:
        runs_or_experiment: an experiment name (the recipe name by default); or runs, each a Run,
            a run directory or an MLflow run id (prefix); None: the store's only experiment.
        last: only the `last` most recent runs (0: all).

    The columns are those of `tools/compare.py --format csv`: run_id, name, recipe, status, epochs,
    best and final val top-1/top-5, wall time, img/s, devices, run_dir (where it trained), then the recipe
    values that differ.

    Raises:
        UserError: no such experiment or run, or no runs yet.
    """
    import pandas as pd

    from .inspection.compare import collect, summary_table
    from .rundir.run_json import has_run_json

    experiment, refs = None, []
    if isinstance(runs_or_experiment, str) and not has_run_json(Path(runs_or_experiment)):
        experiment = runs_or_experiment
    elif isinstance(runs_or_experiment, (str, Path, Run)):
        refs = [_run_ref(runs_or_experiment)]
    elif runs_or_experiment is not None:
        refs = [_run_ref(item) for item in runs_or_experiment]
    header, rows = summary_table(collect(experiment, refs, last))
    return pd.DataFrame(rows, columns=header)


def _run_ref(run: str | Path | Run) -> str:
    """A run id or a run directory, as tools/compare.py --runs takes them."""
    if isinstance(run, Run):
        if run.run_id is None:
            raise UserError(f"{run.run_dir}: this run was trained without tracking: MLflow has no record of it.")
        return run.run_id
    return str(run)
