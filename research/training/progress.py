"""Progress inside an epoch: a tqdm bar on a terminal or in Jupyter (tqdm.auto: a widget there), plain
log lines otherwise (tmux logs, nohup, CI); status.json and MLflow iter/ metrics every log_every batches."""
from __future__ import annotations

import logging
import sys
from typing import Callable

log = logging.getLogger("research.training")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the test tqdm.auto makes to choose its widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


class Progress:
    """`tick` after every batch (cheap), `update` at log intervals with freshly synced figures."""

    def __init__(self, epoch: int, epochs: int, steps: int, enabled: bool = True):
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.enabled = enabled
        self.bar = None
        if enabled and (sys.stderr.isatty() or in_notebook()):
            from tqdm.auto import tqdm
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                            dynamic_ncols=True, leave=False)

    def tick(self, batch: int) -> None:
        if self.bar is not None:
            self.bar.update(batch - self.bar.n)

    def update(self, batch: int, img_per_s: float, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{loss:.4f}", "lr": f"{lr:.3g}", "img/s": f"{img_per_s:.0f}"},
                                 refresh=False)
            self.tick(batch)
        else:
            log.info("epoch %d/%d batch %d/%d  loss %.4f  lr %.3g  %.0f img/s", self.epoch + 1, self.epochs,
                     batch, self.steps, loss, lr, img_per_s)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class InEpochReport:
    """Every log_every batches on rank 0: status.json rewritten and MLflow iter/ metrics queued.

    iter/loss and iter/img_per_s cover the batches since the previous report (the log line and
    status.json show the epoch's running mean); the step is the global step. Steps up to
    `logged_until` (in MLflow already when a run killed with -9 resumes) are not logged again.
    """

    def __init__(self, tracker, write_status: Callable[[dict], None], epochs: int, local_batch: int,
                 num_workers: int = 1, logged_until: int | None = None):
        self.tracker, self.write_status, self.epochs = tracker, write_status, epochs
        self.local_batch, self.num_workers = local_batch, num_workers
        self.logged_until = -1 if logged_until is None else logged_until
        self._last = (-1, 0, 0.0, 0.0)            # epoch, images, loss sum, seconds at the previous report

    def __call__(self, state, steps_per_epoch: int, images: int, seconds: float, loss: float, lr: float) -> None:
        """`images` and `seconds` count from this epoch's first trained batch; `loss` is their mean."""
        epoch, last_images, last_loss_sum, last_seconds = self._last
        if epoch != state.epoch:
            last_images, last_loss_sum, last_seconds = 0, 0.0, 0.0
        self._last = (state.epoch, images, loss * images, seconds)
        new_images = max(images - last_images, 1)
        img_per_s = new_images / max(seconds - last_seconds, 1e-6) * self.num_workers
        if state.step > self.logged_until:
            self.tracker.log_metrics({"iter/loss": (loss * images - last_loss_sum) / new_images, "iter/lr": lr,
                                      "iter/img_per_s": img_per_s}, step=state.step)
        batch_s = seconds / max(images / self.local_batch, 1)
        eta_epoch = (steps_per_epoch - state.batch_in_epoch) * batch_s
        epoch_s = state.elapsed_s / len(state.history) if state.history else steps_per_epoch * batch_s
        self.write_status({"batch": state.batch_in_epoch, "batches": steps_per_epoch, "step": state.step,
                           "train_loss": loss, "img_per_s": images / max(seconds, 1e-6) * self.num_workers,
                           "eta_epoch_s": eta_epoch,
                           "eta_s": eta_epoch + (self.epochs - state.epoch - 1) * epoch_s})
