"""One table of exit statuses: every tool's main goes through errors.tool_exit, and the words of a status are the
table's wherever they are said (--help, the keep-alive supervisor, a sweep's trial summary)."""
import ast
import signal
import subprocess
import sys
from pathlib import Path

from research.detached.supervise import policy
from research.errors import ExitCode, describe, exit_status_help, signal_exit_code, signal_of
from research.sweeps.spec import outcome

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def test_a_user_error_is_one_line_and_status_2_and_a_returned_status_is_kept(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(TOOLS.parent)!r})\n"
                      "from research.errors import UserError, tool_exit\n"
                      "def main(argv):\n"
                      "    if argv == ['bad']:\n"
                      "        raise UserError('--x bad: expected a number')\n"
                      "    return int(argv[0])\n"
                      "tool_exit(main)\n")
    bad = subprocess.run([sys.executable, script, "bad"], capture_output=True, text=True)
    assert (bad.returncode, bad.stderr, bad.stdout) == (2, "error: --x bad: expected a number\n", "")
    assert subprocess.run([sys.executable, script, "143"]).returncode == 143


def test_every_tool_exits_through_the_wrapper_and_words_no_status_of_its_own():
    for path in sorted(TOOLS.glob("*.py")):
        tree = ast.parse(path.read_text())
        assert "tool_exit(main)" in path.read_text(), f"{path.name}: not `tool_exit(main)` under __main__"
        literal_returns = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Return)
                           and isinstance(node.value, ast.Constant) and node.value.value not in (0, None)]
        assert not literal_returns, f"{path.name}:{literal_returns}: an exit status other than 0 spelled as a number"
        printed = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant)
                   and isinstance(node.value, str) and node.value.startswith("error: ")]
        assert not printed, f"{path.name}:{printed}: prints its own 'error: ' line (raise UserError instead)"


def test_a_status_is_said_in_the_table_s_words_by_the_supervisor_and_the_sweep(tmp_path):
    log = tmp_path / "console.log"
    for code in (ExitCode.USER_ERROR, ExitCode.UNHEALTHY, ExitCode.SAVE_FAILED):
        words = describe(code)
        assert words in exit_status_help(code) and policy(code)[1].startswith(words + ": ")
        assert outcome(code, log) == ("failed", f"exit {int(code)}, {words}")
    stopped = signal_exit_code(signal.SIGTERM)
    assert signal_of(stopped) == signal_of(-signal.SIGTERM) == signal.SIGTERM and signal_of(2) is None
    assert policy(stopped)[1].startswith("stopped by SIGTERM") and outcome(stopped, log) == ("killed", "stopped by SIGTERM")
    assert describe(signal_exit_code(signal.SIGKILL)) == "killed by SIGKILL" and describe(7) is None
    assert "128+N stopped by signal N" in exit_status_help(ExitCode.SIGNAL)

