"""How one process takes part in its run, decided once where the run is built (job.train) and only read below:
what it does with a checkpoint already in the run directory, whether a notebook called it, and its place among
distributed workers. A worker other than rank 0 gets stand-ins that do nothing (lifecycle.FollowerLifecycle, a
disabled tracker and report, checkpoint.NoCheckpoints, plots.NoCurves) instead of `if rank0` through the loop."""
from __future__ import annotations

from dataclasses import dataclass

from ..cli import Resume


@dataclass(frozen=True)
class Modes:
    resume: Resume = "auto"        # "auto" resumes a checkpoint of the same recipe, "require" insists, "fresh" sets
                                   # the old run aside (rank 0) and starts over
    interactive: bool = False      # research.train in a notebook: a failure raises after the run is marked
    rank: int = 0                  # this worker's rank: rank 0 alone reports, checkpoints and tracks
    num_workers: int = 1           # distributed kvstore workers (machines), each with its own devices

    @property
    def rank0(self) -> bool:
        return self.rank == 0
