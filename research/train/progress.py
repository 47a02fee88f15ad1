"""Per-epoch progress: a tqdm bar on a terminal, plain log lines otherwise (tmux logs, nohup, CI)."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("research.train")


class Progress:
    """`tick` after every batch (cheap), `update` at log intervals with freshly synced figures."""

    def __init__(self, epoch: int, epochs: int, steps: int, enabled: bool = True):
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
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
