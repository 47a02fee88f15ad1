"""Reading a library's ELF sections, links and GPU kernels: on files the tests write, and on the installed MXNet."""
from __future__ import annotations

import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

import pytest
from fake_libs import CU112_IMAGES, fatbin, write_elf

from research.gpu.elf import ElfError, dynamic_names
from research.gpu.fatbin import CUBIN, PTX, read_kernels


def test_cu112_shaped_kernels_run_from_maxwell_to_ada_and_not_on_hopper_or_newer(tmp_path):
    library = write_elf(tmp_path / "libmxnet.so", {".text": b"\x90" * 40, ".nv_fatbin": fatbin([CU112_IMAGES] * 3)})
    kernels = read_kernels(library)
    runs = {c: kernels.runs_on(c) for c in [(3, 7), (5, 2), (6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9),
                                            (9, 0), (10, 0), (12, 0)]}
    assert runs == {(3, 7): False, (5, 2): True, (6, 1): True, (7, 0): True, (7, 5): True, (8, 0): True,
                    (8, 6): True, (8, 9): True, (9, 0): False, (10, 0): False, (12, 0): False}
    assert kernels.describe() == "sm_50, sm_60, sm_70, sm_80, sm_86 (cubins in all 3 fatbins), no PTX"


def test_ptx_is_compiled_by_the_driver_for_its_own_and_every_newer_gpu(tmp_path):
    library = write_elf(tmp_path / "libmxnet.so", {".nv_fatbin": fatbin([[(CUBIN, 80), (PTX, 90)]] * 2, padding=8)})
    kernels = read_kernels(library)
    assert [kernels.runs_on(c) for c in [(8, 0), (8, 6), (9, 0), (10, 0), (12, 0)]] == [True, True, True, True, True]
    assert not kernels.runs_on((7, 5))
    assert "PTX for sm_90" in kernels.describe()


def test_a_gpu_must_have_an_image_in_every_fatbin(tmp_path):
    """One source file compiled without sm_70 is an operator that fails on a V100 or T4 (sm_60's cubin does not run
    on 7.x); without sm_86, the A10 still runs sm_80's."""
    without_70 = [image for image in CU112_IMAGES if image[1] != 70]
    without_86 = CU112_IMAGES[:-1]
    kernels = read_kernels(write_elf(tmp_path / "libmxnet.so", {".nv_fatbin": fatbin([CU112_IMAGES, without_70])}))
    assert not kernels.runs_on((7, 0)) and not kernels.runs_on((7, 5)) and kernels.runs_on((8, 0))
    assert "in some fatbins only: sm_70" in kernels.describe()
    kernels = read_kernels(write_elf(tmp_path / "libmxnet2.so", {".nv_fatbin": fatbin([CU112_IMAGES, without_86])}))
    assert kernels.runs_on((8, 6)) and kernels.runs_on((8, 9))


def test_a_library_without_gpu_code_has_no_kernels_and_garbage_is_an_error(tmp_path):
    assert read_kernels(write_elf(tmp_path / "cpu.so", {".text": b"\x90" * 8})) is None
    broken = write_elf(tmp_path / "broken.so", {".nv_fatbin": b"\x01" * 32})
    with pytest.raises(ValueError, match="no fatbin header at byte"):
        read_kernels(broken)
    (tmp_path / "not-elf.so").write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ElfError, match="not a 64-bit little-endian ELF file"):
        read_kernels(tmp_path / "not-elf.so")


def test_links_and_soname_from_the_dynamic_section(tmp_path):
    library = write_elf(tmp_path / "libmxnet.so", needed=("libcudnn.so.8", "libcudart.so.11.0"), soname="libmxnet.so")
    assert dynamic_names(library) == (["libcudnn.so.8", "libcudart.so.11.0"], "libmxnet.so")
    assert dynamic_names(write_elf(tmp_path / "static.so", {".text": b"\x90"})) == ([], None)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf to compare with")
def test_the_installed_libmxnet_reads_as_readelf_reads_it():
    library = Path(find_spec("mxnet").submodule_search_locations[0]) / "libmxnet.so"
    out = subprocess.run(["readelf", "-d", "-W", str(library)], capture_output=True, text=True, check=True).stdout
    expected = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    needed, _ = dynamic_names(library)
    assert needed == expected and "libc.so.6" in needed
    has_fatbin = ".nv_fatbin" in subprocess.run(["readelf", "-S", "-W", str(library)], capture_output=True,
                                                text=True, check=True).stdout
    assert (read_kernels(library) is not None) == has_fatbin
