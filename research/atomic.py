"""Atomic file writes: every file a run leaves is written to a temporary name, fsynced and renamed,
so a reader (or a resume after a full disk) never meets a truncated file under its real name.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# mkstemp/mkdtemp create 0600/0700, private to the trainer's user: the files a run leaves get the modes
# an ordinary open() would give (another user's `tools/status.py`, an MLflow server, a shared group can
# read them). The umask can only be read by setting it: once, at import, before any writer thread.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder; the old file stays on failure."""
    with writing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


@contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a file name (savefig, net.export);
    on success it is fsynced and renamed to `path`, on any error it is removed."""
    path = Path(path)
    tmp = temporary_file(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def writing_dir(folder: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `folder`; on success it replaces `folder` whole (the old
    one is removed after the swap), on any error it is removed and `folder` is left as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        for path in (p for p in tmp.iterdir() if p.is_file()):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old"))
            os.replace(folder, old)        # a rename cannot replace a non-empty folder: move the old one aside
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(folder.parent)


def open_new(path: str | Path, mode: str = "w") -> IO:
    """Open `path` ("w" or "wb") as a file this call creates. Whatever the name held is removed first, not
    written through: a file a killed run left, or a symbolic link planted there to redirect the write to
    another file; O_EXCL (mode "x") fails the open if anything takes the name in between."""
    Path(path).unlink(missing_ok=True)
    return open(path, mode.replace("w", "x"))


def temporary_file(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty hidden file beside `path`, with the permissions open() would give it."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return Path(name)


LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.(tmp|old)$")   # what temporary_file / writing_dir name them


def remove_temporaries(folder: Path) -> list[Path]:
    """Remove the hidden temporary files and folders that a write killed midway left in `folder`
    (.<name>.<8 random characters>.tmp, and .old for a replaced folder); returns what was removed.
    Only for a folder no live writer uses (a run directory under its lock)."""
    removed = []
    for path in sorted(Path(folder).iterdir()):
        if LEFTOVER.match(path.name):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (it survives a power cut, not only a crash)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL


def explain(path: str | Path, err: OSError) -> str:
    """'could not write PATH: No space left on device (12 KB free on /mnt); free space ...': one line."""
    path = Path(path)
    reason = err.strerror or str(err)
    if is_disk_full(err):
        where = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(where).free
        return (f"could not write {path}: {reason} ({_size(free)} free on the disk holding {where}); free space "
                f"there (older runs, *.old-* folders, caches) or write to another disk")
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"could not write {path}: {reason}; choose a writable place or fix the permissions"
    return f"could not write {path}: {reason}"


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"
