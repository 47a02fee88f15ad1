"""The run directory's lock and --fresh, and the leftovers of killed writes removed."""
import os

import pytest

from research import atomic
from research.rundir.lock import RunDirBusy, RunDirLock, remove_leftovers, set_aside


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


def test_a_second_owner_is_refused_naming_the_first_and_fresh_keeps_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    first = RunDirLock(run_dir).acquire()
    try:
        with pytest.raises(RunDirBusy, match=f"in use by another run \\(pid {os.getpid()} on "):
            RunDirLock(run_dir).acquire()
        (run_dir / "status.json").write_text("{}")
        aside = set_aside(run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"] and (aside / "status.json").is_file()
    finally:
        first.release()
    RunDirLock(run_dir).acquire().release()                  # free again once released
