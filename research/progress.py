"""Progress of a long pass (an epoch, a feature extraction): a tqdm bar on a terminal or in Jupyter
(tqdm.auto: a widget there), plain log lines where there is no terminal (tmux logs, nohup, CI)."""
from __future__ import annotations

import logging
import sys


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the test tqdm.auto makes to choose its widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


class ProgressBar:
    """`advance(done)` as often as you like (cheap); `report(done, figures)` when there are fresh
    figures: the bar's postfix, or one log line `desc done/total  key value ...` without a terminal."""

    def __init__(self, total: int, desc: str, unit: str, log: logging.Logger, enabled: bool = True):
        self.total, self.desc, self.log, self.enabled = total, desc, log, enabled
        self.bar = None
        if enabled and (sys.stderr.isatty() or in_notebook()):
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def advance(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def report(self, done: int, figures: dict[str, str]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(figures, refresh=False)
            self.advance(done)
        else:
            self.log.info("%s %d/%d  %s", self.desc, done, self.total, "  ".join(f"{k} {v}" for k, v in figures.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
