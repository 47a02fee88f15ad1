"""The run directory's files: status.json lands on a full disk; the leftovers of killed writes are removed."""
import json

from helpers import fill

from research import atomic
from research.training.run_dir import remove_leftovers, write_status


def test_the_final_status_lands_on_a_disk_with_no_free_block(small_disk):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    write_status(run_dir, "running", "abc", epoch=3, epochs=10)
    ballast = fill(small_disk, leave=1 << 20)
    try:
        with open(ballast, "ab", buffering=0) as more:     # then the last bytes too: not one block left
            for size in (1 << 16, 512, 1):
                try:
                    while True:
                        more.write(b"\0" * size)
                except OSError:
                    pass
        write_status(run_dir, "failed", "abc", epoch=3, epochs=10)
        status = json.loads((run_dir / "status.json").read_text())
    finally:
        ballast.unlink()
    assert (status["status"], status["epoch"], status["run_id"]) == ("failed", 3, "abc")
    assert not write_status.failed and not list(run_dir.glob(".*.tmp"))


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    temp = atomic.temporary_file(run_dir / "checkpoints" / "step-0000000044.ckpt")     # as a killed write leaves it
    (run_dir / ".model.x7_ab2cd.tmp").mkdir()
    (run_dir / ".model.x7_ab2cd.tmp" / "lenet.onnx").write_text("half")
    (run_dir / ".curves.png.k2j4h6g8.old").write_text("")
    keep = [run_dir / "status.json", run_dir / ".lock", run_dir / "checkpoints" / "step-0000000022.ckpt",
            run_dir / "notes.tmp"]
    for path in keep:
        path.write_text("kept")
    removed = remove_leftovers(run_dir)
    assert sorted(p.name for p in removed) == sorted([temp.name, ".model.x7_ab2cd.tmp", ".curves.png.k2j4h6g8.old"])
    assert all(path.exists() for path in keep) and not temp.exists()
