"""Training curves as PNG (matplotlib's object API: safe off the main thread)."""
from __future__ import annotations

import io
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from matplotlib.figure import Figure

from .. import atomic
from ..metrics import TRAIN_LOSS, TRAIN_TOP1, VAL_LOSS, VAL_TOP1, VAL_TOP5

log = logging.getLogger("research.training")


class _InlineFigure(Figure):
    """A Figure that Jupyter shows when a cell returns it, even before pyplot set up its inline backend."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def plot_curves(history: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """Loss and top-1/top-5 against epoch, train and val, from the loop's per-epoch history."""
    with atomic.writing(path) as tmp:
        curves_figure(history, title).savefig(tmp, format="png")


def curves_figure(history: list[dict[str, float]], title: str = "") -> Figure:
    """The figure plot_curves saves; a notebook shows it inline when a cell returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _InlineFigure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for key, style in ((TRAIN_LOSS, "-"), (VAL_LOSS, "--")):
        loss_ax.plot(epochs, [h.get(key, float("nan")) for h in history], style, label=key)
    for key, style in ((TRAIN_TOP1, "-"), (VAL_TOP1, "--"), (VAL_TOP5, ":")):
        acc_ax.plot(epochs, [h.get(key, float("nan")) for h in history], style, label=key)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


class CurvesWriter:
    """RUN_DIR/curves.png redrawn after each epoch on a thread of its own: drawing takes 0.1-0.3 s,
    a tenth of a toy epoch, so the loop only queues it."""

    def __init__(self, path: str | Path, title: str):
        self.path, self.title = Path(path), title
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curves")

    def update(self, history: list[dict[str, float]]) -> Future:
        """Queue a redraw from a copy of `history`; the Future is done once the file is in place."""
        return self._pool.submit(self._draw, [dict(entry) for entry in history])

    def _draw(self, history: list[dict[str, float]]) -> None:
        try:
            plot_curves(history, self.path, self.title)
        except Exception as err:            # the run goes on without a fresh picture; the Future carries it
            log.warning("%s not updated: %s", self.path.name,
                        atomic.explain(self.path, err) if isinstance(err, OSError) else err)
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class NoCurves:
    """The CurvesWriter of a distributed worker other than rank 0, which draws none."""

    def __init__(self, path: str | Path, title: str):
        self.path, self.title = Path(path), title

    def update(self, history: list[dict[str, float]]) -> Future:
        done: Future = Future()
        done.set_result(None)
        return done

    def close(self) -> None:
        pass
