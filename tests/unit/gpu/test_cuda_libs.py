"""Loading the pip wheels' CUDA libraries before mxnet: which are found, in which order they load, which copy wins
over a system one, and how a process tells which it loaded. On nvidia/*/lib trees the tests make."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO

from research.builds import BUILDS
from research.gpu import cuda_libs
from research.gpu.cuda_libs import RUNTIME, loader_env, pip_copy, preload, system_copy, wheel_pins

CU112 = next(b for b in BUILDS if b.extra == "cu112")


def _site(root: Path, sonames: list[str]) -> Path:
    """A site-packages holding nvidia/<folder>/lib/<soname> for each, as the nvidia-*-cu11 wheels lay them out."""
    for soname in sonames:
        folder = root / "nvidia" / cuda_libs.BY_SONAME[soname].folder / "lib"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / soname).write_bytes(b"")
    return root


def test_preload_loads_the_builds_libraries_dependencies_first_by_absolute_path(tmp_path, monkeypatch):
    site = _site(tmp_path / "site", [lib.soname for lib in RUNTIME])       # cusparse too, which cu112 does not link
    opened = []
    monkeypatch.setattr(cuda_libs.ctypes, "CDLL", lambda path, mode=0: opened.append((path, mode)))
    monkeypatch.setattr(cuda_libs, "installed_builds", lambda: [CU112])
    done = preload([str(tmp_path / "elsewhere"), str(site)])
    names = [Path(path).name for path, _ in opened]
    assert names == ["libcudart.so.11.0", "libcublasLt.so.11", "libcublas.so.11", "libcufft.so.10", "libcurand.so.10",
                     "libcusolver.so.11", "libnvrtc.so.11.2", "libnvToolsExt.so.1", "libcudnn.so.8", "libnccl.so.2"]
    assert all(Path(path).is_absolute() and Path(path).parent.parent.parent == (site / "nvidia").resolve()
               for path, _ in opened)
    assert {mode for _, mode in opened} == {cuda_libs.ctypes.RTLD_GLOBAL}
    assert set(done) == set(names)


def test_preload_does_nothing_without_wheels_or_without_a_cuda_build(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda_libs.ctypes, "CDLL", lambda *a, **k: pytest.fail("loaded a library"))
    monkeypatch.setattr(cuda_libs, "installed_builds", lambda: [CU112])
    assert preload([str(tmp_path)]) == {}                                  # no nvidia/ folder: the CPU machine
    site = _site(tmp_path / "site", ["libcudnn.so.8"])
    monkeypatch.setattr(cuda_libs, "installed_builds", lambda: [BUILDS[0]])
    assert preload([str(site)]) == {}                                      # CPU mxnet beside someone's nvidia wheels


def test_a_library_that_fails_to_load_is_reported_not_raised(tmp_path, monkeypatch):
    site = _site(tmp_path / "site", ["libcudart.so.11.0", "libcudnn.so.8"])
    monkeypatch.setattr(cuda_libs, "installed_builds", lambda: [CU112])
    done = preload([str(site)])                                            # empty files: dlopen refuses them
    assert isinstance(done["libcudnn.so.8"], OSError) and "libcudnn.so.8" in str(done["libcudnn.so.8"])


def test_where_the_loader_would_find_a_library_without_the_wheels(tmp_path, monkeypatch):
    beside, ld_path = tmp_path / "mxnet", tmp_path / "cuda" / "lib64"
    for folder in (beside, ld_path):
        folder.mkdir(parents=True)
    (beside / "libopenblas.so.0").write_bytes(b"")
    (ld_path / "libcudnn.so.8").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/nonexistent:{ld_path}")
    assert system_copy("libopenblas.so.0", beside) == ("beside libmxnet.so", beside / "libopenblas.so.0")
    assert system_copy("libcudnn.so.8", beside) == ("LD_LIBRARY_PATH", ld_path / "libcudnn.so.8")
    assert system_copy("libc.so.6")[0] in ("ldconfig", "system")
    assert system_copy("libnot-a-cuda-library.so.99") is None


def test_pip_copies_and_the_environment_for_a_child_that_imports_mxnet_first(tmp_path, monkeypatch):
    site = _site(tmp_path / "site", ["libcudnn.so.8", "libnccl.so.2"])
    assert pip_copy("libcudnn.so.8", [str(site)]) == (site / "nvidia/cudnn/lib/libcudnn.so.8").resolve()
    assert pip_copy("libcublas.so.11", [str(site)]) is None and pip_copy("libfoo.so.1", [str(site)]) is None
    monkeypatch.setattr(sys, "path", [str(site)])
    env = loader_env({"LD_LIBRARY_PATH": "/opt/cuda/lib64", "PATH": "/bin"})
    assert env["LD_LIBRARY_PATH"].split(":") == [str((site / "nvidia/cudnn/lib").resolve()),
                                                 str((site / "nvidia/nccl/lib").resolve()), "/opt/cuda/lib64"]
    assert wheel_pins(("libcublasLt.so.11", "libcublas.so.11")) == ["nvidia-cublas-cu11==11.11.3.6"]


STAND_IN = "libcudnn_stand_in.so.8"
CHILD = textwrap.dedent("""
    import ctypes, json, sys
    from research.builds import Build
    from research.gpu import cuda_libs
    # a soname of its own: `import research` has preloaded the real libcudnn.so.8 where the cu112 extra is installed
    stand_in = cuda_libs.CudaLib(@STAND_IN@, "nvidia-cudnn-cu11", "8.9.6.50", "cudnn")
    cuda_libs.RUNTIME, cuda_libs.BY_SONAME = [stand_in], {@STAND_IN@: stand_in}
    cuda_libs.installed_builds = lambda: [Build("cu112", "mxnet-cu112", (11, 2), runtime=(@STAND_IN@,))]
    site, library, do_preload = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    preloaded = {k: str(v) for k, v in cuda_libs.preload([site]).items()} if do_preload else {}
    try:
        version = ctypes.CDLL(library).linked_cudnn_version()
    except OSError as err:
        print(json.dumps({"error": str(err)}))
        sys.exit()
    print(json.dumps({"version": version, "preloaded": preloaded, "loaded": str(cuda_libs.loaded().get(@STAND_IN@))}))
""").replace("@STAND_IN@", repr(STAND_IN))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build stand-in shared libraries")
def test_a_library_linking_the_sonames_loads_after_preload_and_the_pip_copy_wins(tmp_path):
    """A stand-in libmxnet.so that links a cuDNN stand-in by its soname (no RPATH to it): without the preload it does
    not load; with it, it loads and calls the pip copy even when LD_LIBRARY_PATH offers another (the system's)."""
    site, system, build = tmp_path / "site", tmp_path / "system", tmp_path / "build"
    pip_dir = site / "nvidia" / "cudnn" / "lib"
    for folder in (pip_dir, system, build):
        folder.mkdir(parents=True)
    for folder, version in ((pip_dir, 8906), (system, 8100)):
        source = folder / "cudnn.c"
        # not cudnnGetVersion: where the cu112 extra is installed, the real cuDNN is loaded RTLD_GLOBAL and would answer
        source.write_text(f"int stand_in_version(void) {{ return {version}; }}\n")
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{STAND_IN}", "-o", str(folder / STAND_IN),
                        str(source)], check=True)
    (build / "mx.c").write_text("int stand_in_version(void);\nint linked_cudnn_version(void) { return stand_in_version(); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(build / "libmxnet.so"), str(build / "mx.c"),
                    f"-L{system}", f"-l:{STAND_IN}"], check=True)

    def child(preload: bool, ld_path: str) -> dict:
        env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": ld_path}
        out = subprocess.run([sys.executable, "-c", CHILD, str(site), str(build / "libmxnet.so"), str(int(preload))],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert f"{STAND_IN}: cannot open shared object file" in child(preload=False, ld_path="")["error"]
    with_wheels = child(preload=True, ld_path="")
    assert with_wheels["version"] == 8906 and with_wheels["loaded"] == str((pip_dir / STAND_IN).resolve())
    assert child(preload=False, ld_path=str(system))["version"] == 8100        # no wheels: the loader's search
    both = child(preload=True, ld_path=str(system))
    assert both["version"] == 8906 and both["loaded"] == str((pip_dir / STAND_IN).resolve())
