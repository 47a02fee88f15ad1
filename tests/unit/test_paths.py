"""Every docs/, recipes/, research/, tools/ and tests/ file that the code, the recipes, the tests or the docs name
exists (a module moved to another package leaves no stale name behind)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMED_PATH = re.compile(r"(?<![\w./-])((?:docs|recipes|research|tools|tests)/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*"
                        r"\.(?:md|yaml|png|py))")
NOT_FILES = {                        # named on purpose though absent: the check skips these alone
    "recipes/nope.yaml",                                   # tests/e2e/test_train.py: the missing-recipe error
    "docs/img/squeezenet-stability.png",                   # tools/stability.py: an output path in its usage
    "tools/im2rec.py",                                     # MXNet's own packer, in the mxnet wheel
}
SOURCES = ["README.md", "research/**/*.py", "tools/*.py", "tests/**/*.py", "recipes/**/*.yaml", "docs/**/*.md",
           "notebooks/*.ipynb", ".ci/run"]


def named_paths() -> dict[str, list[str]]:
    """path named -> the files that name it."""
    found: dict[str, list[str]] = {}
    for pattern in SOURCES:
        for source in sorted(REPO.glob(pattern)):
            for path in NAMED_PATH.findall(source.read_text(errors="replace")):
                found.setdefault(path, []).append(str(source.relative_to(REPO)))
    return found


def test_every_path_named_exists():
    found = named_paths()
    assert {"recipes/lenet_digits.yaml", "tools/train.py", "research/training/loop.py"} <= set(found)   # the scan works
    missing = {path: sorted(set(where)) for path, where in found.items() if not (REPO / path).exists() and path not in NOT_FILES}
    assert not missing, "named but missing: " + "; ".join(f"{p} (in {', '.join(w)})" for p, w in missing.items())
