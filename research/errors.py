"""UserError (a problem the user can fix) and the exit statuses every tool uses.

Tools print a UserError's message on one line, without a traceback, and exit with status 2.
"""
from __future__ import annotations

from enum import IntEnum


class UserError(ValueError):
    """Raised with a message that names the bad thing and how to fix it."""


class ExitCode(IntEnum):
    """What a tool's exit status means; `exit_status_help` words them for --help."""
    OK = 0
    FAILED = 1            # an unexpected error: its traceback is printed (and kept in RUN_DIR/traceback.txt)
    USER_ERROR = 2        # a bad recipe, option, device or missing data: one line says what to fix
    UNHEALTHY = 3         # the loss became NaN, or the guard found the net's head dead or stalled
    SAVE_FAILED = 4       # a checkpoint could not be written (full disk, no permission)
    PRUNED = 5            # a sweep's trial its pruner stopped early, after a checkpoint (tools/sweep.py --prune)
    SIGNAL = 128          # 128 + N: stopped by signal N after writing a checkpoint


MEANINGS = {
    ExitCode.OK: "0 done",
    ExitCode.FAILED: "1 an unexpected error (a traceback)",
    ExitCode.USER_ERROR: "2 a user error (one line names it and the fix)",
    ExitCode.UNHEALTHY: "3 stopped by the guard: the loss became NaN or the net's head is dead or stalled "
                        "(the message names the rule and the figures)",
    ExitCode.SAVE_FAILED: "4 a checkpoint could not be written (full disk, no permission): stopped at the last "
                          "good checkpoint, which the message names; free space and run the same command to resume",
    ExitCode.PRUNED: "5 a sweep's trial stopped early by the sweep's pruner (tools/sweep.py --prune), after its "
                     "checkpoint: its metric was behind the other trials'; the sweep does not train it again, "
                     "and --resume trains it on by hand",
    ExitCode.SIGNAL: "128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) after writing a checkpoint; "
                     "run the same command to resume",
}


def exit_status_help(*codes: ExitCode | tuple[ExitCode, str]) -> str:
    """'Exit status: 0 done, 2 a user error ...' for a tool's --help epilog.

    Each code is worded from MEANINGS, or given as (code, "what it means for this tool").
    """
    parts = [f"{code[0].value} {code[1]}" if isinstance(code, tuple) else MEANINGS[code] for code in codes]
    return "Exit status: " + "; ".join(parts) + "."


def signal_exit_code(signal_number: int) -> int:
    return ExitCode.SIGNAL + signal_number
