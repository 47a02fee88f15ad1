"""Runs side by side from the MLflow store: one summary row per run, the recipe values that
differ between them, an overlay plot of their curves, and links into the MLflow UI."""
from __future__ import annotations

import csv
import io
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..durations import format_duration
from ..errors import UserError
from ..metrics import IMG_PER_S, TRAIN_LOSS, VAL_TOP1, VAL_TOP5
from ..paths import REPO
from ..rundir.run_json import has_run_json, read_run_json
from ..rundir.status import read_status
from ..tables import fitted_table, percent, terminal_width, text_table, width_of
from ..tracking import get_client, public_uri, tracking_uri
from ..tracking.names import format_value
from ..tracking.sweeps import PARENT_TAG, is_sweep_parent

CURVE_KEYS = (VAL_TOP1, VAL_TOP5, TRAIN_LOSS, IMG_PER_S)


@dataclass
class RunRow:
    """What the comparison shows of one run; curves map a metric key to [(epoch, value)]."""
    run_id: str
    name: str
    recipe: str
    status: str
    experiment_id: str
    epochs_done: int
    epochs_planned: int | None
    best_epoch: int | None           # the epoch of the best val top-1: what best.ckpt holds
    best_top1: float | None
    best_top5: float | None          # top-5 at best_epoch, not the best top-5 seen
    final_top1: float | None
    final_top5: float | None
    wall_s: float | None             # start to end (to now while running), resumption gaps included
    img_per_s: float | None          # median over epochs: the first epoch's warm-up does not skew it
    devices: str
    run_dir: str = ""                # where it was trained (the run_dir tag; "" for runs older than the tag)
    params: dict[str, str] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def open_client():
    """The MLflow client of tracking_uri(); a sqlite store must exist already (never create one here).

    Raises:
        UserError: the sqlite file is missing (no runs trained into this store yet).
    """
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UserError(f"no MLflow store at {public_uri(uri)}: train a run first (python tools/train.py RECIPE), "
                        f"or set MLFLOW_TRACKING_URI to the store your runs went to.")
    return get_client()


def select_runs(client, experiment: str | None = None, run_ids: list[str] = (), last: int = 0) -> list:
    """MLflow runs to compare: those named by id (prefix) or run directory, else an experiment's.

    Without an experiment or ids, the store's only experiment that has runs is used.

    Raises:
        UserError: no such experiment (the message lists them), no such run, or no runs.
    """
    experiments = {e.name: e for e in client.search_experiments()}
    if experiment is not None and experiment not in experiments:
        raise UserError(f"no experiment '{experiment}' in {public_uri(tracking_uri())}. Experiments: "
                        f"{_names(experiments)}.")
    scope = [experiments[experiment].experiment_id] if experiment else [e.experiment_id for e in experiments.values()]
    if run_ids:
        where = f", experiment '{experiment}'" if experiment else ""
        runs = [run for ref in run_ids for run in _trials_or_itself(client, _find_run(client, scope, ref, where))]
    else:
        if experiment is None:
            used = [e for e in experiments.values() if client.search_runs([e.experiment_id], max_results=1)]
            if len(used) != 1:
                found = f"Experiments: {_names(experiments)}" if experiments else "It has no experiments yet"
                raise UserError(f"choose the runs to compare with --experiment NAME or --runs ID ... "
                                f"({public_uri(tracking_uri())}). {found}.")
            experiment, scope = used[0].name, [used[0].experiment_id]
        runs = client.search_runs(scope, order_by=["attributes.start_time ASC"], max_results=50000)
        runs = [run for run in runs if not is_sweep_parent(run)]     # its trials are rows; it trained nothing
    if not runs:
        raise UserError(f"experiment '{experiment}' has no runs yet in {public_uri(tracking_uri())}: "
                        f"train one with python tools/train.py recipes/{experiment}.yaml.")
    return runs[-last:] if last else runs


def _names(experiments: dict) -> str:
    return ", ".join(sorted(experiments)) or "none"


def _find_run(client, experiment_ids: list[str], ref: str, where: str = ""):
    """A run by full id, unique id prefix, run directory (its run.json) or sweep folder (its status.json names the
    sweep's parent run)."""
    if has_run_json(Path(ref)):
        run_dir, ref = ref, read_run_json(Path(ref)).run_id or ""
        if not ref:
            raise UserError(f"{run_dir}: its run.json names no MLflow run: that run was trained without tracking.")
    elif Path(ref).is_dir():
        status = read_status(Path(ref))
        named = status.run_id if status is not None else ""
        if not named:
            raise UserError(f"--runs {ref}: a folder with no run.json (a run directory) nor status.json naming an "
                            f"MLflow run (a sweep's folder): pass a run directory, a sweep folder or a run id; "
                            f"python tools/status.py lists the runs under runs/.")
        ref = named
    if not re.fullmatch(r"[0-9a-f]{4,32}", ref):
        raise UserError(f"--runs {ref}: not a run id (32 hex digits, or a unique prefix of 4 or more), a run "
                        f"directory holding run.json nor a sweep folder; python tools/status.py lists the runs.")
    runs = client.search_runs(experiment_ids, filter_string=f"attributes.run_id LIKE '{ref}%'", max_results=3)
    if len(runs) != 1:
        what = "no run" if not runs else "several runs"
        raise UserError(f"--runs {ref}: {what} with that id in {public_uri(tracking_uri())}{where}. "
                        f"tools/compare.py --experiment NAME lists the runs and their ids.")
    return runs[0]


def _trials_or_itself(client, run) -> list:
    """A sweep's parent run stands for its trials (it trained nothing: its row was '0/?'); any other run for itself."""
    if not is_sweep_parent(run):
        return [run]
    return client.search_runs([run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run.info.run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10000)


def summarize(client, run) -> RunRow:
    """One run's row: its metric histories read from the store (a few queries)."""
    info, data = run.info, run.data
    curves = {key: _history(client, info.run_id, key) for key in CURVE_KEYS}
    top1, top5 = dict(curves[VAL_TOP1]), dict(curves[VAL_TOP5])
    best_epoch = max(top1, key=lambda epoch: (top1[epoch], -epoch)) if top1 else None
    final_epoch = max(top1) if top1 else None
    end_ms = info.end_time if info.status != "RUNNING" and info.end_time else time.time() * 1000
    planned = data.params.get("train.epochs")
    speeds = [value for _, value in curves[IMG_PER_S]]
    return RunRow(
        run_id=info.run_id, name=info.run_name or "", recipe=data.tags.get("recipe", ""),
        status=(f"PRUNED@{data.tags['sweep.pruned_at_epoch']}" if "sweep.pruned_at_epoch" in data.tags  # a sweep's
                else info.status), experiment_id=info.experiment_id, epochs_done=final_epoch or 0,  # pruned trial
        epochs_planned=int(planned) if planned and planned.isdigit() else None,
        best_epoch=best_epoch, best_top1=top1.get(best_epoch), best_top5=top5.get(best_epoch),
        final_top1=top1.get(final_epoch), final_top5=top5.get(final_epoch),
        wall_s=(end_ms - info.start_time) / 1000 if info.start_time else None,
        img_per_s=statistics.median(speeds) if speeds else None,
        devices=data.tags.get("contexts", ""), run_dir=data.tags.get("run_dir", ""), params=dict(data.params),
        curves=curves)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """(epoch, value) sorted by epoch; a step logged twice (a resumed run) keeps its latest value."""
    latest = {}
    for metric in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
        latest[metric.step] = metric.value
    return sorted(latest.items())


def collect(experiment: str | None = None, run_ids: list[str] = (), last: int = 0) -> list[RunRow]:
    """Rows for the chosen runs of the store at tracking_uri(). Raises UserError (see select_runs)."""
    client = open_client()
    return [summarize(client, run) for run in select_runs(client, experiment, run_ids, last)]


def differing_params(rows: list[RunRow]) -> list[str]:
    """Recipe keys whose value is not the same in every row (absent counts as a value), sorted."""
    keys = sorted(set().union(*(row.params for row in rows))) if rows else []
    return [key for key in keys if len({row.params.get(key) for row in rows}) > 1]


# -- output ------------------------------------------------------------------------------------
COLUMNS = ("run", "name", "recipe", "status", "epochs", "best top1", "top5", "@epoch", "final top1", "wall", "img/s",
           "devices", "output")
SHARED = ("recipe", "status", "devices")       # said once above the table when every run has the same
NARROW = ("img/s", "wall", "top5", "@epoch")   # left out, in this order, of a table still too wide (the CSV has all)
CSV_COLUMNS = ("run_id", "name", "recipe", "status", "epochs_done", "epochs_planned", "best_val_top1",
               "best_val_top5", "best_epoch", "final_val_top1", "final_val_top5", "wall_s", "img_per_s",
               "devices", "run_dir")


def format_rows(rows: list[RunRow], fmt: str = "text", width: int | None = None) -> str:
    """The summary and the differing recipe values as text tables (fitted to `width`, default the terminal's),
    markdown tables, or one CSV."""
    keys = differing_params(rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header, values = summary_table(rows)
        writer.writerow(header)
        writer.writerows([_or_blank(value) for value in row] for row in values)
        return out.getvalue()
    summary = _summary_text(rows, width or terminal_width()) if fmt == "text" else \
        _markdown(COLUMNS, [_summary_cells(row) for row in rows])
    table = text_table if fmt == "text" else _markdown
    if len(rows) < 2:
        values = "(one run: no recipe values to compare)"
    elif not keys:
        values = "The runs shown share every recipe value."
    else:
        values = table(("run",) + tuple(keys), [[row.run_id[:8]] + [param_text(row.params.get(k)) for k in keys]
                                                for row in rows])
    heading = "Recipe values that differ:" if fmt == "text" else "**Recipe values that differ**"
    return f"{summary}\n\n{heading}\n{values}\n"


def _summary_text(rows: list[RunRow], width: int) -> str:
    """The summary table within `width` columns: the columns every run shares said once above it, then, if still
    too wide, the run directories listed under it instead of in a column, then the names wrapped."""
    cells = [_summary_cells(row) for row in rows]
    shared = [i for i, name in enumerate(COLUMNS) if name in SHARED and len({c[i] for c in cells}) == 1]
    lines = [", ".join(f"{COLUMNS[i]} {cells[0][i]}" for i in shared)] if shared and len(rows) > 1 else []
    keep = [i for i in range(len(COLUMNS)) if i not in shared or len(rows) < 2]
    table = text_table([COLUMNS[i] for i in keep], [[c[i] for i in keep] for c in cells])
    if width_of(table) > width:
        keep.remove(COLUMNS.index("output"))
        table = _names_wrapped(keep, cells, width)
        left_out = []
        for name in NARROW:
            if width_of(table) <= width:
                break
            keep.remove(COLUMNS.index(name))
            left_out.append(name)
            table = _names_wrapped(keep, cells, width)
        table += "\n\nRun directories:\n" + "\n".join(f"  {c[0]}  {c[COLUMNS.index('output')]}" for c in cells)
        if left_out:
            table += f"\n(left out to fit: {', '.join(left_out)}; --format csv has every column)"
    return "\n".join(lines + [table])


def _names_wrapped(keep: list[int], cells: list[list[str]], width: int) -> str:
    """The summary's `keep` columns, the name column wrapped (to no fewer than 12 characters) to fit in `width`."""
    header = [COLUMNS[i] for i in keep]
    return fitted_table(header, [[c[i] for i in keep] for c in cells], width, header.index("name"), 12)


def param_text(value: str | None) -> str:
    """A param as --set takes it: MLflow keeps floats as '0.0', '1.0', which read as integers here ('0', '1')."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except ValueError:
        return value
    return format_value(number) if number.is_integer() and "." in value else value


def summary_table(rows: list[RunRow]) -> tuple[tuple[str, ...], list[list]]:
    """The CSV's header and values (None where unknown): the summary, then the recipe values that differ."""
    keys = differing_params(rows)
    values = [[row.run_id, row.name, row.recipe, row.status, row.epochs_done, row.epochs_planned, row.best_top1,
               row.best_top5, row.best_epoch, row.final_top1, row.final_top5, row.wall_s and round(row.wall_s, 1),
               row.img_per_s and round(row.img_per_s, 1), row.devices, row.run_dir or None] +
              [row.params.get(key) for key in keys]
              for row in rows]
    return CSV_COLUMNS + tuple(keys), values


def _summary_cells(row: RunRow) -> list[str]:
    planned = row.epochs_planned if row.epochs_planned is not None else "?"
    return [row.run_id[:8], row.name, row.recipe, row.status, f"{row.epochs_done}/{planned}",
            percent(row.best_top1), percent(row.best_top5), _or_dash(row.best_epoch), percent(row.final_top1),
            _duration(row.wall_s), _or_dash(row.img_per_s and f"{row.img_per_s:.0f}"), row.devices or "-",
            _short_path(row.run_dir)]


def _markdown(header: tuple[str, ...], rows: list[list[str]]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header))] + [line(row) for row in rows])


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _short_path(path: str) -> str:
    """A run directory as the user would type it: relative to the working directory when inside it, else to
    the repository (runs/...)."""
    if not path:
        return "-"
    for root in (Path.cwd(), REPO):
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return path


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def _or_blank(value) -> str:
    return "" if value is None else str(value)


def plot_runs(rows: list[RunRow], path: str | Path) -> None:
    """PNG (or any matplotlib format, by suffix) overlaying val top-1 and train loss per epoch.

    Raises:
        UserError: the output folder does not exist.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"--plot {path}: folder {path.parent} does not exist.")
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    keys = differing_params(rows)
    for row in rows:
        # The differing recipe values tell the curves apart better than names that differ by a date.
        label = f"{row.run_id[:8]} " + (", ".join(f"{k}={row.params.get(k, '-')}" for k in keys) or row.name)
        for ax, key in ((acc_ax, VAL_TOP1), (loss_ax, TRAIN_LOSS)):
            points = row.curves.get(key, [])
            ax.plot([e for e, _ in points], [v for _, v in points], marker="." if len(points) < 30 else None,
                    label=label)
    acc_ax.set(xlabel="epoch", ylabel="val top-1", title="validation top-1", ylim=(0, 1))
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="training loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    fig.savefig(path)
