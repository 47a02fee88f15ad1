"""The run's pace as it goes: estimated (first log interval) then measured epoch time and run ETA,
logged once and kept in MLflow tags, and a warning when the devices wait on data."""
from __future__ import annotations

import logging
import time

import mxnet as mx

from ..durations import format_duration
from ..tracking import Tracker
from .estimate import DATA_WAIT_WARNING, run_estimate

log = logging.getLogger("research.training")


class Pace:
    """Called by the loop on rank 0: `batch_arrived` at the top of every batch, `interval` after
    each log interval's sync, `epoch_end` after each epoch.

    Data wait: right after the log interval's sync (and a wait for every queued operation) the
    devices have nothing to do, so the time until the next batch arrives is time they sit idle
    for data. In a steady state where decoding
    keeps up, batches are prefetched and this is ~0; where it does not, it is the per-batch
    shortfall. Its share of the interval's time per batch estimates the devices' idle share.
    (Time spent inside `next()` in general says nothing: with MXNet's asynchronous engine the
    loop also waits there for the devices, which must free a prefetch buffer first.)
    """

    def __init__(self, tracker: Tracker, epochs: int, steps_per_epoch: int, global_batch: int,
                 enabled: bool = True, warn_data_wait: bool = True):
        self.tracker, self.epochs, self.enabled = tracker, epochs, enabled
        # In-memory data (digits, MNIST, synthetic) is sliced on the loop's own thread: its share is
        # measured and logged, but there are no decoders to add, so no warning that asks for them.
        self.warn_data_wait = warn_data_wait
        self.steps_per_epoch, self.global_batch = steps_per_epoch, global_batch
        self._probe: float | None = None      # clock at the last sync, until the next batch arrives
        self._wait = 0.0                      # that probe's result
        self._last = (-1, 0, 0.0)             # (epoch, batches, seconds) at the previous interval
        self._estimated = False
        self._shares: list[float] = []        # this epoch's interval idle shares
        self._warned_epoch = -1

    def start(self, state) -> None:
        """A resumed run knows its epoch time already: say so at once."""
        if self.enabled and state.history:
            epoch_s = state.elapsed_s / len(state.history)
            self._report(epoch_s, epoch_s * (self.epochs - state.epoch),
                         f"measured: mean of {len(state.history)} epoch(s) so far")
            self._estimated = True

    def batch_arrived(self) -> None:
        if self._probe is not None:
            self._wait, self._probe = time.monotonic() - self._probe, None

    def interval(self, state, epoch: int, seconds: float) -> None:
        """After the log interval's sync; `seconds` since the epoch's first trained batch.

        An epoch's first interval is a baseline only: it holds the iterator's start-up (and, on
        a resumed run, the batches skipped). The first estimate comes from the second one.
        """
        if not self.enabled:
            return
        last_epoch, last_batches, last_seconds = self._last
        self._last = (epoch, state.batch_in_epoch, seconds)
        wait, self._wait = self._wait, 0.0
        batches, spent = state.batch_in_epoch - last_batches, seconds - last_seconds
        if last_epoch == epoch and batches > 0 and spent > 0:
            per_batch = spent / batches
            share = min(wait / per_batch, 1.0)
            self._shares.append(share)
            if self.warn_data_wait and share > DATA_WAIT_WARNING and self._warned_epoch != epoch:
                self._warned_epoch = epoch
                log.warning("the devices waited on data for about %.0f%% of the last %d batches: the data "
                            "pipeline, not the devices, sets the pace. `python tools/benchmark.py plan RECIPE` "
                            "measures both sides and says what would lift it.", 100 * share, batches)
            if not self._estimated:
                self._estimated = True
                img_per_s = self.global_batch / per_batch
                figures = run_estimate(self.steps_per_epoch * self.global_batch, self.global_batch, img_per_s,
                                       self.epochs, done_epochs=epoch)
                self._report(figures["epoch_s"], figures["run_s"],
                             f"estimated from batches {last_batches + 1}-{state.batch_in_epoch} at "
                             f"{img_per_s:.0f} img/s, training only")
        # The log's sync (the loss sums) leaves the last batch's backward and update queued, and they
        # hold its input buffer: wait for them too, once an interval, so that the probe sees data only.
        mx.nd.waitall()
        self._probe = time.monotonic()

    def epoch_wait_share(self) -> float:
        """Mean idle share of the epoch's intervals (0 without any), then reset for the next."""
        shares, self._shares = self._shares, []
        return sum(shares) / len(shares) if shares else 0.0

    def epoch_end(self, state) -> None:
        """Tags from the measured epochs (evaluation included); logged too if no estimate was made."""
        if not self.enabled:
            return
        epoch_s = state.elapsed_s / len(state.history)
        figures = (epoch_s, epoch_s * (self.epochs - state.epoch), f"measured: mean of {len(state.history)} epoch(s)")
        if self._estimated:
            self._set_tags(*figures)
        else:
            self._estimated = True
            self._report(*figures)

    def _report(self, epoch_s: float, eta_s: float, basis: str) -> None:
        log.info("pace: epoch %s, run ETA %s for %d epochs (%s)", format_duration(epoch_s),
                 format_duration(eta_s), self.epochs, basis)
        self._set_tags(epoch_s, eta_s, basis)

    def _set_tags(self, epoch_s: float, eta_s: float, basis: str) -> None:
        self.tracker.set_tags({"pace.epoch_s": f"{epoch_s:.0f}", "pace.eta_s": f"{eta_s:.0f}",
                               "pace.eta": format_duration(eta_s), "pace.basis": basis})
