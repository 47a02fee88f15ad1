"""UserError (a problem the user can fix) and the one table of exit statuses: what each means, in the words
every tool's --help, the keep-alive supervisor's restart policy and a sweep's trial summary use; and
`tool_exit`, which every tools/*.py main goes through.

Tools print a UserError's message on one line, without a traceback, and exit with status 2.
"""
from __future__ import annotations

import signal
import sys
from enum import IntEnum
from typing import Callable, NoReturn


class UserError(ValueError):
    """Raised with a message that names the bad thing and how to fix it."""


class ExitCode(IntEnum):
    """What a tool's exit status means; WORDS says it."""
    OK = 0
    FAILED = 1            # an unexpected error: its traceback is printed (and kept in RUN_DIR/traceback.txt)
    USER_ERROR = 2        # a bad recipe, option, device or missing data: one line says what to fix
    UNHEALTHY = 3         # the loss became NaN, or the guard found the net's head dead or stalled
    SAVE_FAILED = 4       # a checkpoint could not be written (full disk, no permission)
    PRUNED = 5            # a sweep's trial its pruner stopped early, after a checkpoint (tools/sweep.py --prune)
    SIGNAL = 128          # 128 + N: stopped by signal N after writing a checkpoint


# Each status in a few words (what every reader says), then what a tool's --help adds.
WORDS: dict[ExitCode, tuple[str, str]] = {
    ExitCode.OK: ("done", ""),
    ExitCode.FAILED: ("an unexpected error", " (a traceback)"),
    ExitCode.USER_ERROR: ("a user error", " (one line names it and the fix)"),
    ExitCode.UNHEALTHY: ("stopped by the guard (NaN loss, dead or stalled head)",
                         ": the message names the rule and the figures"),
    ExitCode.SAVE_FAILED: ("a checkpoint could not be written (full disk, no permission)",
                           ": stopped at the last good checkpoint, which the message names; free space and run the "
                           "same command to resume"),
    ExitCode.PRUNED: ("pruned: a sweep's trial its pruner stopped early (tools/sweep.py --prune)",
                      ", after its checkpoint: its metric was behind the other trials'; the sweep does not train it "
                      "again, and --resume trains it on by hand"),
    ExitCode.SIGNAL: ("stopped by signal N", " (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) after writing a checkpoint; "
                                             "run the same command to resume"),
}
# The signals a run stops on after a checkpoint (research/training/signals.py); any other signal kills it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def help_words(code: ExitCode) -> str:
    """'2 a user error (one line names it and the fix)': a status as a tool's --help says it."""
    return f"{'128+N' if code == ExitCode.SIGNAL else code.value} {''.join(WORDS[code])}"


def exit_status_help(*codes: ExitCode | tuple[ExitCode, str]) -> str:
    """'Exit status: 0 done, 2 a user error ...' for a tool's --help epilog.

    Each code is worded from WORDS, or given as (code, "what it means for this tool").
    """
    parts = [f"{code[0].value} {code[1]}" if isinstance(code, tuple) else help_words(code) for code in codes]
    return "Exit status: " + "; ".join(parts) + "."


def signal_exit_code(signal_number: int) -> int:
    """The status a shell shows for a process stopped by (or on) signal N: 128+N."""
    return ExitCode.SIGNAL + signal_number


def signal_of(status: int) -> int | None:
    """Signal N of an exit status, a shell's 128+N or subprocess's -N; None for any other status."""
    number = status - ExitCode.SIGNAL if status > ExitCode.SIGNAL else -status if status < 0 else None
    return number if number in signal.valid_signals() else None


def shell_status(returncode: int) -> int:
    """subprocess's returncode as a shell shows it: -N (killed by signal N) is 128+N."""
    return signal_exit_code(-returncode) if returncode < 0 else returncode


def describe(status: int) -> str | None:
    """An exit status in the table's few words: 'a user error', 'stopped by SIGTERM' (a stop signal: the run wrote
    its checkpoint), 'killed by SIGKILL' (any other signal); None for a status the table does not know."""
    number = signal_of(status)
    if number is not None:
        verb = "stopped" if number in STOP_SIGNALS else "killed"
        return f"{verb} by {signal.Signals(number).name}"
    if status in ExitCode._value2member_map_ and status != ExitCode.SIGNAL:
        return WORDS[ExitCode(status)][0]
    return None


def tool_exit(main: Callable[[list[str]], int]) -> NoReturn:
    """What every tools/*.py runs under `if __name__ == "__main__"`: exit with the status `main(sys.argv[1:])`
    returns; a UserError it raises is printed as one line, 'error: ...', on stderr, and the status is 2."""
    try:
        status = int(main(sys.argv[1:]))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        status = ExitCode.USER_ERROR
    sys.exit(status)
