"""console.log's last error line, one rule for the keep-alive supervisor and the sweep."""
from research.rundir.console import MAX_CHARS, last_error, size


def test_the_last_error_line_is_found_whatever_said_it(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("2026-12-02 13:15:28 INFO epoch 1/2\n"
                   "2026-12-02 13:15:29 ERROR every output of the net had the same value: the head is dead.\n")
    assert last_error(log) == "every output of the net had the same value: the head is dead."     # no date, no level
    with open(log, "a") as out:
        out.write("error: train.lr: expected a number, got 'fast'\n")                              # a UserError
    assert last_error(log) == "error: train.lr: expected a number, got 'fast'"
    with open(log, "a") as out:
        out.write("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                  "mxnet.base.MXNetError: Check failed: p[0] == RecordIOWriter::kMagic\n")
    assert last_error(log) == "mxnet.base.MXNetError: Check failed: p[0] == RecordIOWriter::kMagic"


def test_only_the_output_after_the_offset_counts_and_a_long_line_is_cut(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("error: the run before the restart\n")
    offset = size(log)
    with open(log, "a") as out:
        out.write("2026-12-02 13:15:28 INFO resuming from step 40\n")
    assert last_error(log, offset) == "" and last_error(log) == "error: the run before the restart"
    with open(log, "a") as out:
        out.write("RuntimeError: " + "x" * 1000 + "\n")
    said = last_error(log, offset)
    assert said.startswith("RuntimeError: xxx") and len(said) == MAX_CHARS + 3 and said.endswith("...")
    assert last_error(tmp_path / "none.log") == "" and size(tmp_path / "none.log") == 0
