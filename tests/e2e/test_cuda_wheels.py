"""Opt-in (`pytest -m cuda_wheels`; skipped otherwise and in CI): the README's GPU install on a machine with no GPU.

Builds a venv with the `cu112` extra (about 2.2 GB of wheels to download, 3.8 GB on disk) and a stand-in for the
driver's libcuda.so.1 (every cu* function libmxnet.so imports, returning CUDA_ERROR_NO_DEVICE; compiled with gcc:
the one library PyPI cannot give), then checks that `import research` then `import mxnet` works with CUDA, cuDNN and
NCCL enabled, with nothing exported but the stand-in driver's folder, and that tools/doctor.py says no GPU is visible.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = [pytest.mark.cuda_wheels, pytest.mark.slow]

CHECK = """
import research, mxnet as mx
from research.gpu.cuda_libs import loaded
features = mx.runtime.Features()
print("enabled:", ",".join(n for n in ("CUDA", "CUDNN", "NCCL") if features.is_enabled(n)))
print("gpus:", mx.context.num_gpus())
print("libcudnn.so.8:", loaded()["libcudnn.so.8"])
"""


def _stand_in_libcuda(libmxnet: Path, folder: Path) -> Path:
    """libcuda.so.1 with an empty function for every cu* symbol libmxnet.so imports (nm -D --undefined-only)."""
    symbols = subprocess.run(["nm", "-D", "--undefined-only", str(libmxnet)], capture_output=True, text=True,
                             check=True).stdout.split()
    names = sorted({s for s in symbols if s.startswith("cu") and s[2:3].isupper()})
    assert "cuLaunchKernel" in names, names
    source = folder / "libcuda_stand_in.c"
    source.write_text("/* stand-in for the driver's libcuda.so.1: no device */\n"
                      + "".join(f"int {name}(void) {{ return 100; }}\n" for name in names))   # CUDA_ERROR_NO_DEVICE
    library = folder / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(library), str(source)], check=True)
    return library


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm")), reason="needs gcc and nm for the stand-in driver")
def test_the_readme_gpu_install_imports_with_cuda_and_the_doctor_sees_no_gpu():
    with tempfile.TemporaryDirectory(prefix="cuda-wheels-") as tmp:
        tmp = Path(tmp)
        venv, driver = tmp / "venv", tmp / "driver"
        driver.mkdir()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{REPO}[cu112]"],
                                 capture_output=True, text=True, timeout=3600)
        assert install.returncode == 0, install.stderr[-3000:]
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        _stand_in_libcuda(site / "mxnet" / "libmxnet.so", driver)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "LD_LIBRARY_PATH": str(driver),   # the driver, nothing else
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}

        bare = subprocess.run([str(python), "-c", "import mxnet"], env=env, capture_output=True, text=True, cwd=tmp)
        print("import mxnet alone:", bare.stderr.strip().splitlines()[-1])
        assert bare.returncode != 0 and "cannot open shared object file" in bare.stderr    # the wheels' folders are not searched

        check = subprocess.run([str(python), "-c", CHECK], env=env, capture_output=True, text=True, cwd=tmp)
        print(check.stdout)
        assert check.returncode == 0, check.stderr[-3000:]
        assert "enabled: CUDA,CUDNN,NCCL" in check.stdout and "gpus: 0" in check.stdout
        assert f"libcudnn.so.8: {site / 'nvidia' / 'cudnn' / 'lib' / 'libcudnn.so.8'}" in check.stdout

        doctor = subprocess.run([str(python), str(REPO / "tools" / "doctor.py"), "--output", str(tmp / "runs")],
                                env=env, capture_output=True, text=True, cwd=tmp, timeout=600)
        print(doctor.stdout, doctor.stderr)
        assert doctor.returncode == 2
        assert "works: CUDA on, CUDNN on, NCCL on" in doctor.stdout
        assert "not ready: no GPU visible" in doctor.stdout and "fix: install the NVIDIA driver" in doctor.stdout
