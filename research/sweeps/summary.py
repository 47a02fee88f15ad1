"""A sweep's summary: one row per trial (its values, outcome and the chosen metric's best epoch, as it reported it
to the sweep's study, or read from its MLflow run), the best trial, the table (summary.md, summary.csv) with the
epochs spent against what the same trials would have cost unpruned, the metric against each swept value
(sweep.png), all of it on the parent MLflow run as artifacts, tags and metrics."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .. import atomic
from ..tables import figure, text_table
from ..tracking import Tracker, compare_url, experiment_url, serve_hint
from ..tracking.names import label
from ..tracking.sweeps import describe_summary, metric_history, remove_strays
from .spec import SweepSpec, Trial


def history(parent: Tracker, entry: dict, metric: str) -> list[tuple[int, float]]:
    """The metric per epoch of the trial `entry` (sweep.json's record) names, from its MLflow run."""
    return metric_history(parent, entry.get("run_id") or "", metric)


def best_of(points: list[tuple[int, float]], goal: str) -> tuple[int, float] | None:
    """(epoch, value) of the best epoch, the earliest of equals; None without points."""
    if not points:
        return None
    sign = 1 if goal == "max" else -1
    return max(points, key=lambda point: (sign * point[1], -point[0]))


def summary_rows(spec: SweepSpec, trials: list[Trial], entries: dict[str, dict],
                 points: dict[str, list[tuple[int, float]]], sweep_dir: Path) -> list[dict]:
    """One row per trial, in the sweep's order: values, state ('waiting' if never started), best and final metric
    (from `points`: trial name -> (epoch, metric)), epochs trained and planned (`planned`: its recipe's epochs)."""
    rows = []
    for trial in trials:
        entry, mine = entries.get(trial.name, {}), points.get(trial.name, [])
        best = best_of(mine, spec.goal)
        state = entry.get("state", "waiting")
        reason = (f"at epoch {entry.get('pruned_at_epoch')}: " if state == "pruned" else "") + entry.get("reason", "")
        rows.append({"trial": trial.name, "state": state, "values": trial.values,
                     "best": best[1] if best else None, "epoch": best[0] if best else None,
                     "final": mine[-1][1] if mine else None, "epochs": len(mine),
                     "planned": trial.epochs or entry.get("epochs") or len(mine),
                     "run_id": entry.get("run_id"), "run_dir": str(sweep_dir / trial.folder), "reason": reason})
    return rows


def epochs_line(rows: list[dict]) -> str | None:
    """'epochs trained: 46, against 120 for the same trials unpruned (38%)'; None when no trial was pruned."""
    spent = sum(row["epochs"] for row in rows)
    unpruned = spent + sum(max(row["planned"] - row["epochs"], 0) for row in rows if row["state"] == "pruned")
    if unpruned == spent:
        return None
    return f"epochs trained: {spent}, against {unpruned} for the same trials unpruned ({spent / unpruned:.0%})"


def best_row(rows: list[dict], goal: str) -> dict | None:
    """The finished trial with the best value (max or min by `goal`); None if none finished with one."""
    done = [row for row in rows if row["state"] == "finished" and row["best"] is not None]
    if not done:
        return None
    return max(done, key=lambda row: row["best"] if goal == "max" else -row["best"])


def table(spec: SweepSpec, rows: list[dict], fmt: str = "simple") -> str:
    """The trials as a table (tabulate's `fmt`: simple for the console, github for summary.md)."""
    header = ["trial", "state", f"best {spec.metric}", "@epoch", "final", "epochs", "run", "note"]
    cells = [[row["trial"], row["state"], figure(spec.metric, row["best"]), row["epoch"] or "-",
              figure(spec.metric, row["final"]), row["epochs"], (row["run_id"] or "-")[:8], row["reason"] or ""]
             for row in rows]
    return text_table(header, cells, fmt)


def csv_text(spec: SweepSpec, rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "state", *spec.keys, f"best {spec.metric}", "best_epoch", f"final {spec.metric}",
                     "epochs", "planned_epochs", "run_id", "run_dir", "note"])
    for row in rows:
        writer.writerow([row["trial"], row["state"], *row["values"].values(), _blank(row["best"]),
                         _blank(row["epoch"]), _blank(row["final"]), row["epochs"], row["planned"], row["run_id"] or "",
                         row["run_dir"], row["reason"]])
    return out.getvalue()


def _blank(value) -> str:
    return "" if value is None else str(value)


def format_summary(spec: SweepSpec, rows: list[dict], best: dict | None, parent: Tracker,
                   port: int | None = None) -> str:
    """What the sweep prints at its end: the table, which trials failed and why, the best one, the links."""
    lines = ["", table(spec, rows), ""]
    failed = [row for row in rows if row["state"] == "failed"]
    if failed:
        lines += [f"{len(failed)} failed:"] + [f"  {row['trial']}: {row['reason']}" for row in failed] + [""]
    pruned = [row for row in rows if row["state"] == "pruned"]
    if pruned:
        lines += [f"{len(pruned)} pruned:"] + [f"  {row['trial']}: {row['reason']}" for row in pruned]
        lines += [epochs_line(rows) or "", ""]
    if best:
        lines.append(f"best: {best['trial']} ({spec.metric} {figure(spec.metric, best['best'])} at epoch "
                     f"{best['epoch']}), "
                     f"{best['run_dir']}")
    if parent.enabled:
        children = [row["run_id"] for row in rows if row["run_id"]]
        lines += [f"In the MLflow UI ({serve_hint(port)}), the sweep's runs: "
                  f"{experiment_url(parent.experiment_id, port)}",
                  f"its trials side by side: {compare_url(children, [parent.experiment_id], port)}"]
    return "\n".join(lines)


def publish(spec: SweepSpec, rows: list[dict], best: dict | None, parent: Tracker, sweep_dir: Path,
            final: bool) -> None:
    """summary.md, summary.csv and sweep.png in the sweep's folder and on the parent run, with the best trial
    as tags and metrics; `final` (not stopped): the children no trial names are removed."""
    atomic.write_text(sweep_dir / "summary.md", table(spec, rows, "github") + "\n" +
                      (f"\n{epochs_line(rows)}\n" if epochs_line(rows) else ""))
    atomic.write_text(sweep_dir / "summary.csv", csv_text(spec, rows))
    plot_sweep(spec, rows, best, sweep_dir / "sweep.png")
    for name in ("summary.md", "summary.csv", "sweep.png"):
        parent.log_artifact(sweep_dir / name)
    failed = [row for row in rows if row["state"] == "failed"]
    pruned = [row for row in rows if row["state"] == "pruned"]
    tags = {"sweep.failed": "; ".join(f"{row['trial']}: {row['reason']}" for row in failed)[:5000] or "none",
            "sweep.pruned": "; ".join(f"{row['trial']}: {row['reason']}" for row in pruned)[:5000] or "none"}
    if best:
        tags |= {"best.trial": best["trial"], "best.run_id": best["run_id"] or "", "best.run_dir": best["run_dir"]}
    parent.set_tags(tags)
    describe_summary(parent, "\n\n".join(filter(None, [table(spec, rows, "github"), epochs_line(rows), best and (
        f"best: {best['trial']} ({spec.metric} {figure(spec.metric, best['best'])} at epoch {best['epoch']})")])))
    for step, metrics in enumerate(metrics_by_trial(spec, rows), start=1):
        parent.log_metrics(metrics, step=step)
    if final:
        parent.flush()
        remove_strays(parent, {row["run_id"] for row in rows if row["run_id"]})


def metrics_by_trial(spec: SweepSpec, rows: list[dict]) -> list[dict[str, float]]:
    """What the parent run logs at step k (the sweep's k-th trial), so its charts are lines over the trials, not
    one point each: the trial's own best (trial/<metric>), the best so far and its values (best/...), and the
    counts so far (trials/finished, failed, pruned; epochs/trained and, had none been pruned, epochs/unpruned)."""
    out, counts, best = [], {"finished": 0, "failed": 0, "pruned": 0}, None
    spent = unpruned = 0
    for row in rows:
        if row["state"] in counts:
            counts[row["state"]] += 1
        spent += row["epochs"]
        unpruned += max(row["planned"], row["epochs"]) if row["state"] == "pruned" else row["epochs"]
        best = best_row([r for r in (best, row) if r is not None], spec.goal) or best
        metrics = {f"trials/{state}": count for state, count in counts.items()}
        metrics |= {"epochs/trained": spent, "epochs/unpruned": unpruned}
        if row["best"] is not None:
            metrics[f"trial/{spec.metric}"] = row["best"]
        if best is not None:
            metrics[f"best/{spec.metric}"] = best["best"]
            metrics |= {f"best/{key}": float(value) for key, value in best["values"].items()
                        if _number(value) is not None}
        out.append(metrics)
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def plot_sweep(spec: SweepSpec, rows: list[dict], best: dict | None, path: Path) -> None:
    """The metric's best epoch against each swept value, one panel per key, the best trial starred. In a grid, a
    line joins the trials that share the other keys' values (legend: those values), so trials that scored alike
    are told apart; coinciding points are marked xN. Numeric values on a log axis when the key was
    log-uniform or spans two decades; other values as categories."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = spec.keys
    fig = Figure(figsize=(4.6 * len(keys) + 0.8, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    scored = [row for row in rows if row["best"] is not None and row["state"] != "pruned"]
    pruned = [row for row in rows if row["best"] is not None and row["state"] == "pruned"]
    for ax, key in zip(axes, keys):
        position = _axis(ax, spec, key, [row["values"][key] for row in scored + pruned])
        others = [k for k in keys if k != key]
        series: dict[str, list[dict]] = {}
        for row in scored:
            series.setdefault(label({k: row["values"][k] for k in others}) if not spec.random else "", []).append(row)
        for name, members in series.items():
            members.sort(key=lambda row: position(row["values"][key]))
            ax.plot([position(row["values"][key]) for row in members], [row["best"] for row in members],
                    marker="o", linestyle="-" if name and len(members) > 1 else "none", label=name or None)
        counts: dict[tuple, int] = {}
        for row in scored:
            spot = (position(row["values"][key]), round(row["best"], 6))
            counts[spot] = counts.get(spot, 0) + 1
        for (x, y), count in counts.items():
            if count > 1:
                ax.annotate(f"x{count}", (x, y), textcoords="offset points", xytext=(6, -10), fontsize="small")
        if pruned:                      # their best before the pruner stopped them: fewer epochs than the others
            ax.scatter([position(row["values"][key]) for row in pruned], [row["best"] for row in pruned], marker="x",
                       color="grey", zorder=3, label=f"pruned ({len(pruned)}): best before it stopped")
        if best is not None and best in scored:
            ax.scatter([position(best["values"][key])], [best["best"]], marker="*", s=240, color="gold",
                       edgecolors="black", zorder=3, label=f"best: {best['trial']}")
        ax.set(xlabel=key, ylabel=f"best {spec.metric}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small", loc="best")
    failed = sum(row["state"] == "failed" for row in rows)
    fig.suptitle(f"{len(scored)} trial(s) with a {spec.metric}" + (f", {len(pruned)} pruned" if pruned else "")
                 + (f", {failed} failed" if failed else ""), fontsize="medium")
    fig.tight_layout()
    with atomic.writing(path) as tmp:
        fig.savefig(tmp, format="png")


def _axis(ax, spec: SweepSpec, key: str, texts: list[str]):
    """Set up `key`'s x axis; returns text value -> x position (the number, or the category's index)."""
    numbers = [_number(text) for text in texts]
    if texts and all(n is not None for n in numbers):
        spread = max(numbers) / min(numbers) if min(numbers) > 0 else 0
        if (key in spec.ranges and spec.ranges[key].log) or spread >= 100:
            ax.set_xscale("log")
        return lambda text: _number(text)
    order = list(dict.fromkeys(spec.grid.get(key, []) + texts))
    ax.set_xticks(range(len(order)), order)
    return order.index
