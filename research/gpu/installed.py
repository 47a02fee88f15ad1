"""The installed MXNet as its files say, without importing it: which distribution, its libmxnet.so, the libraries
that links and the GPU kernels it holds. A self-built or NGC MXNet is judged by the same reading."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from ..builds import Build, installed_builds
from .elf import dynamic_names
from .fatbin import Kernels, read_kernels


@dataclass(frozen=True)
class InstalledMxnet:
    package: str                     # the distribution (mxnet-cu112), or "mxnet" for a self-built / NGC one
    version: str
    library: Path                    # libmxnet.so
    needed: tuple[str, ...]          # its DT_NEEDED names
    kernels: Kernels | None          # None: no GPU code (a CPU build)
    build: Build | None              # the PyPI build it is, when its distribution is one of BUILDS

    @property
    def cuda(self) -> bool:
        return self.kernels is not None or any(n.startswith(("libcudart", "libcuda.")) for n in self.needed)

    def describe(self) -> str:
        kind = "CUDA build" if self.cuda else "CPU-only build"
        return f"{self.package} {self.version}, {kind} ({self.library})"


def installed_mxnet() -> InstalledMxnet | None:
    """None when no `mxnet` module is installed; raises OSError / ElfError on an unreadable libmxnet.so."""
    spec = find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        return None
    library = Path(os.environ.get("MXNET_LIBRARY_PATH") or Path(spec.submodule_search_locations[0]) / "libmxnet.so")
    builds = installed_builds()
    build = next((b for b in builds if b.cuda), builds[0] if builds else None)
    package = build.package if build else "mxnet"
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "unknown version"
    needed, _ = dynamic_names(library)
    return InstalledMxnet(package, version, library, tuple(needed), read_kernels(library), build)

