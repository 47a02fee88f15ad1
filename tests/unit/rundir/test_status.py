"""status.json: one reader with one rule for a missing or damaged file, files of older versions read, the final
status lands on a full disk."""
import json
import shutil
from pathlib import Path

from helpers import fill

from research.rundir.status import UNREADABLE, Status, run_state, read_status, write_status

OLD_RUN = Path(__file__).resolve().parents[2] / "fixtures" / "run_before_layout"   # written by commit 8ae53b1


def test_the_final_status_lands_on_a_disk_with_no_free_block(small_disk):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    write_status(run_dir, Status("running", run_id="abc", epoch=3, epochs=10))
    ballast = fill(small_disk, leave=1 << 20)
    try:
        with open(ballast, "ab", buffering=0) as more:     # then the last bytes too: not one block left
            for size in (1 << 16, 512, 1):
                try:
                    while True:
                        more.write(b"\0" * size)
                except OSError:
                    pass
        write_status(run_dir, Status("failed", run_id="abc", epoch=3, epochs=10))
        status = json.loads((run_dir / "status.json").read_text())
    finally:
        ballast.unlink()
    assert (status["status"], status["epoch"], status["run_id"]) == ("failed", 3, "abc")
    assert not write_status.failed and not list(run_dir.glob(".*.tmp"))


def test_one_rule_for_a_missing_or_damaged_file(tmp_path):
    assert read_status(tmp_path) is None and run_state(tmp_path) is None
    for text in ("{\"status\": \"runn", "[1, 2]", "\0" * 10):     # cut short, not an object, zeroed blocks
        (tmp_path / "status.json").write_text(text)
        assert read_status(tmp_path) == Status(UNREADABLE)


def test_what_a_run_wrote_is_read_back_with_who_wrote_it(tmp_path):
    write_status(tmp_path, Status("running", run_id="abc", epoch=2, epochs=5, val_top1=0.5, batch=7, batches=10))
    status = read_status(tmp_path)
    assert (status.state, status.run_id, status.epoch, status.val_top1, status.batch) == ("running", "abc", 2, 0.5, 7)
    assert status.pid > 0 and status.host and status.updated > 0
    on_disk = json.loads((tmp_path / "status.json").read_text())      # the keys every version of the tools reads
    assert {"status", "run_id", "pid", "host", "updated", "epoch", "epochs", "val_top1"} <= set(on_disk)


def test_a_status_file_of_an_older_version_is_read(tmp_path):
    shutil.copytree(OLD_RUN, tmp_path / "old")
    status = read_status(tmp_path / "old")
    assert (status.state, status.epoch, status.epochs, status.host) == ("killed", 1, 3, "vm")
    assert abs(status.val_top1 - 0.7306) < 1e-4
    on_disk = json.loads((tmp_path / "old" / "status.json").read_text())
    (tmp_path / "old" / "status.json").write_text(json.dumps({**on_disk, "a_later_key": 1}))
    assert read_status(tmp_path / "old").epoch == 1                   # keys it does not know are left out
