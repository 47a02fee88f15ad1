"""What a run records about where it came from: git commit and dirty flag, host, MXNet, devices, command,
and MLflow's own Source and User tags."""
from __future__ import annotations

import getpass
import platform
import subprocess
from pathlib import Path

from ..paths import REPO


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"git.commit": commit or "unknown", "git.dirty": str(dirty).lower()}


def environment_tags(contexts: list, argv: list[str]) -> dict[str, str]:
    import mxnet as mx
    git = git_state()
    return {**git, "host": platform.node(), "mxnet.version": mx.__version__,
            "contexts": ",".join(str(c) for c in contexts), "command": " ".join(argv),
            **source_tags(argv[0] if argv else "", git["git.commit"])}


def source_tags(script: str, commit: str) -> dict[str, str]:
    """MLflow's own tags for the UI's Source and User columns (the fluent API sets them; the client does not)."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    if script:              # tools/train.py: relative to the repo; an absolute path inside it becomes so
        path = Path(script)
        tags["mlflow.source.name"] = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags
