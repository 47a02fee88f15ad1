"""What rank 0 tells the user while it trains: the progress bar (or log lines), status.json and MLflow
iter/ metrics every log interval, the pace (epoch time and remaining time, in the log and MLflow tags),
the epoch's log line, and a warning when the devices wait on data.

One remaining-time figure (`Report.eta_s`, from estimate.remaining_s) feeds the log line, status.json
and the pace tags, so the three agree.
"""
from __future__ import annotations

import logging
import time

from ..durations import format_duration
from ..metrics import (EPOCH_S, IMG_PER_S, ITER_IMG_PER_S, ITER_LOSS, ITER_LR, LR, TRAIN_LOSS, TRAIN_TOP1, VAL_LOSS,
                       VAL_TOP1, VAL_TOP5)
from ..progress import ProgressBar
from ..tracking import Tracker
from .estimate import DATA_WAIT_WARNING, remaining_s


log = logging.getLogger("research.training")
# The first epoch a process trains holds its start-up (graphs hybridized, kernels chosen, memory planned): on the
# quickstart it took 12-46 s where the next took 1-2 s, and the pace it gave was 5-8 times the real one. It is left
# out of the estimate unless it lasted this long (then start-up is a small share of it, as on ImageNet).
WARMUP_S = 60.0


class Report:
    """Called by the loop in the order the work runs: `start_epoch`, then per batch `batch_arrived` and
    `advance`, after each log interval's sync `interval` and, once every device has gone idle,
    `synced`; at the epoch's end `end_epoch`.

    Data wait: right after `synced` the devices have nothing queued, so the time until the next
    batch arrives is time they sit idle for data. Where decoding keeps up, batches are prefetched
    and this is ~0; where it does not, it is the per-batch shortfall, and its share of the
    interval's time per batch estimates the devices' idle share. (Time inside `next()` in general
    says nothing: with MXNet's asynchronous engine the loop also waits there for the devices.)
    """

    def __init__(self, lifecycle, tracker: Tracker, state, epochs: int, steps_per_epoch: int, local_batch: int,
                 num_workers: int = 1, logged_until: int | None = None, enabled: bool = True,
                 warn_data_wait: bool = True):
        """`lifecycle` is the run's Lifecycle (status.json); iter/ steps up to `logged_until` (in MLflow already
        when a run killed with -9 resumes) are not logged again. In-memory data (digits, MNIST,
        synthetic) is sliced on the loop's own thread: its wait is measured but `warn_data_wait` is off,
        as there are no decoders to add."""
        self.lifecycle, self.tracker, self.state, self.enabled = lifecycle, tracker, state, enabled
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.local_batch, self.num_workers = local_batch, num_workers
        self.logged_until = -1 if logged_until is None else logged_until
        self.warn_data_wait = warn_data_wait
        self.bar: ProgressBar | None = None
        self.batch_s: float | None = None     # seconds a batch, this epoch's running mean (training only)
        self._last = (0, 0.0, 0.0)            # images, loss sum, seconds at the previous interval of this epoch
        self._probe: float | None = None      # clock at the last `synced`, until the next batch arrives
        self._wait, self._shares, self._warned = 0.0, [], False
        self._estimated = False
        self._first = len(state.history)      # this process's first epoch, in the history once measured
        self._rate_usable = False             # batch_s says what an epoch costs (not this process's start-up)
        if enabled and state.history:       # a resumed run knows its epoch time already
            self._pace(f"measured: mean of {len(self._measured())} epoch(s) so far")

    # -- the one estimate ------------------------------------------------------------------
    def epoch_s(self) -> float | None:
        """Seconds an epoch: the mean of those measured (evaluation included) but this process's first, unless it
        lasted WARMUP_S; else this epoch's pace; None while only start-up has been seen ('estimating')."""
        measured = self._measured()
        if measured:
            return sum(measured) / len(measured)
        return self.batch_s * self.steps_per_epoch if self.batch_s is not None and self._rate_usable else None

    def _measured(self) -> list[float]:
        """The epochs' seconds that say what an epoch costs (see epoch_s)."""
        history = self.state.history
        seconds = [entry.get(EPOCH_S) for entry in history]
        if None in seconds:                                  # a history from before time/epoch_s was kept
            return [self.state.elapsed_s / len(history)] * len(history)
        return [s for i, s in enumerate(seconds) if i != self._first or s >= WARMUP_S]

    def eta_s(self) -> float | None:
        epoch_s = self.epoch_s()
        if epoch_s is None:
            return None
        return remaining_s(self.epochs, self.state.epoch, self.state.batch_in_epoch, self.steps_per_epoch,
                           epoch_s, self.batch_s or epoch_s / self.steps_per_epoch)

    # -- called by the loop ----------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.bar = ProgressBar(self.steps_per_epoch, f"epoch {epoch + 1}/{self.epochs} batch", "batch", log,
                               enabled=self.enabled)
        self.batch_s, self._last, self._probe, self._warned = None, (0, 0.0, 0.0), None, False
        self._rate_usable = False

    def batch_arrived(self) -> None:
        if self._probe is not None:
            self._wait, self._probe = time.monotonic() - self._probe, None

    def advance(self) -> None:
        self.bar.advance(self.state.batch_in_epoch)

    def interval(self, images: int, seconds: float, loss: float, lr: float) -> None:
        """After the log interval's sync. `images` and `seconds` count from this epoch's first trained
        batch, `loss` is their mean. An epoch's first interval is a baseline for the data wait only:
        it holds the iterator's start-up (and, on a resumed run, the batches skipped)."""
        if not self.enabled:
            return
        state = self.state
        last_images, last_loss_sum, last_seconds = self._last
        self._last = (images, loss * images, seconds)
        new_images, spent = images - last_images, seconds - last_seconds
        self.batch_s = seconds / max(images / self.local_batch, 1)
        self._rate_usable = state.epoch != self._first or seconds >= WARMUP_S
        img_per_s = images / max(seconds, 1e-6) * self.num_workers
        self.bar.report(state.batch_in_epoch, {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}", "img/s": f"{img_per_s:.0f}"})
        if last_images and new_images > 0 and spent > 0:
            self._data_wait(spent / (new_images / self.local_batch), new_images // self.local_batch)
            if not self._estimated and self.epoch_s() is not None:
                self._pace(f"estimated from batches {last_images // self.local_batch + 1}-{state.batch_in_epoch} "
                           f"at {new_images / spent * self.num_workers:.0f} img/s, training only")
        eta = self.eta_s()
        if state.step > self.logged_until:
            self.tracker.log_metrics({ITER_LOSS: (loss * images - last_loss_sum) / max(new_images, 1), ITER_LR: lr,
                                      ITER_IMG_PER_S: new_images / max(spent, 1e-6) * self.num_workers},
                                     step=state.step, tags=self._pace_tags(eta))
        self.lifecycle.write_status("running", batch=state.batch_in_epoch, batches=self.steps_per_epoch,
                              step=state.step, train_loss=loss, img_per_s=img_per_s,
                              eta_epoch_s=(self.steps_per_epoch - state.batch_in_epoch) * self.batch_s, eta_s=eta)

    def synced(self) -> None:
        """Every device is idle now (the loop waited for all queued work): the next batch's wait is data."""
        self._probe = time.monotonic()

    def end_epoch(self, metrics: dict[str, float], epoch_seconds: float) -> None:
        """After the epoch is validated and kept (state.epoch counts it)."""
        self.bar.close()
        if not self.enabled:
            return
        state, eta = self.state, self.eta_s()
        log.info("epoch %d/%d  train loss %.4f top1 %.4f | val loss %.4f top1 %.4f top5 %.4f | lr %.3g | "
                 "%.0f img/s | %.1f s | ETA %s", state.epoch, self.epochs, metrics[TRAIN_LOSS],
                 metrics[TRAIN_TOP1], metrics[VAL_LOSS], metrics[VAL_TOP1], metrics[VAL_TOP5],
                 metrics[LR], metrics[IMG_PER_S], epoch_seconds, "estimating" if eta is None else format_duration(eta))
        basis = f"measured: mean of {len(self._measured())} epoch(s)"
        if eta is not None and not self._estimated:      # None: this process's first epoch was short (start-up)
            self._pace(basis)
        elif eta is not None:
            self.tracker.set_tags(self._pace_tags(eta, basis=basis))
        self.lifecycle.write_status("running", eta_s=eta)

    def epoch_wait_share(self) -> float:
        """The devices' mean idle share waiting on data over this epoch's intervals (0 without any)."""
        shares, self._shares = self._shares, []
        return sum(shares) / len(shares) if shares else 0.0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # -- inside ----------------------------------------------------------------------------
    def _data_wait(self, per_batch: float, batches: int) -> None:
        wait, self._wait = self._wait, 0.0
        share = min(wait / per_batch, 1.0)
        self._shares.append(share)
        if self.warn_data_wait and share > DATA_WAIT_WARNING and not self._warned:
            self._warned = True
            log.warning("the devices waited on data for about %.0f%% of the last %d batches: the data pipeline, "
                        "not the devices, sets the pace. `python tools/benchmark.py plan RECIPE` measures both "
                        "sides and says what would lift it.", 100 * share, batches)

    def _pace(self, basis: str) -> None:
        """The first estimate (or a resumed run's measured one): logged once, and kept in MLflow tags."""
        self._estimated = True
        eta = self.eta_s()
        log.info("pace: epoch %s, run ETA %s for %d epochs (%s)", format_duration(self.epoch_s()),
                 format_duration(eta), self.epochs, basis)
        self.tracker.set_tags(self._pace_tags(eta, basis))

    def _pace_tags(self, eta: float | None, basis: str | None = None) -> dict[str, str]:
        epoch_s = self.epoch_s()
        if eta is None or epoch_s is None:
            return {}
        tags = {"pace.epoch_s": f"{epoch_s:.0f}", "pace.eta_s": f"{eta:.0f}", "pace.eta": format_duration(eta)}
        return {**tags, "pace.basis": basis} if basis else tags
