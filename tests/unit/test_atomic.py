"""Files written through research.atomic: whole or absent, and as readable as open() would make them."""
from __future__ import annotations

import os
import stat

import pytest

from research import atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    atomic._UMASK, saved = 0o022, atomic._UMASK     # as if the process had started with it
    yield
    os.umask(old)
    atomic._UMASK = saved


def test_files_and_folders_get_the_modes_open_would_give(tmp_path, umask_022):
    # mkstemp/mkdtemp alone make 0600/0700: another user's tools/status.py or an MLflow server could not read them
    atomic.write_text(tmp_path / "status.json", "{}")
    with atomic.writing_dir(tmp_path / "model") as folder:
        (folder / "net.params").write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "status.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "recipe.yaml"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.writing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk went away")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["recipe.yaml"]
