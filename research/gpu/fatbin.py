"""The GPU code a CUDA library carries: its `.nv_fatbin` section, read header by header (the payloads are
skipped, so the cu112 libmxnet.so's 534 MB section costs about a thousand small reads).

A fatbin container: magic 0xBA55ED50 (u32), version (u16), header size (u16), payload size (u64); its payload
is a run of entries: kind (u16: 1 PTX, 2 cubin), version (u16), header size (u32), payload size (u64), ...,
the SM number (u32) at byte 28 of the entry's header. A cubin for sm_XY runs on compute capability X.Y and
X.Z for Z >= Y only; PTX for sm_XY is compiled by the driver for any X.Y or newer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from .elf import find_section

MAGIC = 0xBA55ED50
CONTAINER = struct.Struct("<IHHQ")
ENTRY = struct.Struct("<HHIQ")
ARCH_AT = 28                       # the SM number's offset in an entry header
PTX, CUBIN = 1, 2


@dataclass(frozen=True, order=True)
class Image:
    """One compiled form of the kernels: a cubin (machine code for one GPU generation) or PTX."""
    sm: int                        # 86 for sm_86, 100 for sm_100
    kind: int                      # PTX or CUBIN

    def runs_on(self, capability: tuple[int, int]) -> bool:
        own = divmod(self.sm, 10)
        if self.kind == PTX:
            return capability >= own
        return capability[0] == own[0] and capability[1] >= own[1]

    def __str__(self) -> str:
        return f"sm_{self.sm}" + (" PTX" if self.kind == PTX else "")


@dataclass(frozen=True)
class Kernels:
    """What a library's fatbins hold: one set of images per fatbin (one per compiled source file)."""
    fatbins: tuple[frozenset[Image], ...]

    def runs_on(self, capability: tuple[int, int]) -> bool:
        """Every fatbin has an image for this GPU: otherwise some operator fails with 'no kernel image'."""
        return bool(self.fatbins) and all(any(i.runs_on(capability) for i in images) for images in self.fatbins)

    def common(self) -> list[Image]:
        """The images every fatbin has: what the build targets."""
        return sorted(frozenset.intersection(*self.fatbins)) if self.fatbins else []

    def describe(self) -> str:
        """'sm_50, sm_60, sm_70, sm_80, sm_86 (cubins in all 198 fatbins), no PTX'."""
        if not self.fatbins:
            return "no GPU code"
        common = self.common()
        cubins = ", ".join(str(i) for i in common if i.kind == CUBIN) or "none"
        ptx = ", ".join(f"sm_{i.sm}" for i in common if i.kind == PTX)
        some = sorted(frozenset.union(*self.fatbins) - set(common))
        return (f"{cubins} (cubins in all {len(self.fatbins)} fatbins), " + (f"PTX for {ptx}" if ptx else "no PTX")
                + (f"; in some fatbins only: {', '.join(map(str, some))}" if some else ""))


def read_kernels(path: Path) -> Kernels | None:
    """The kernels in `path`'s .nv_fatbin section; None when it has none (a CPU build)."""
    with open(path, "rb") as file:
        section = find_section(file, ".nv_fatbin")
        if section is None:
            return None
        return Kernels(tuple(_containers(file, section.offset, section.offset + section.size)))


def _containers(file: BinaryIO, pos: int, end: int) -> Iterator[frozenset[Image]]:
    while pos + CONTAINER.size <= end:
        file.seek(pos)
        head = file.read(CONTAINER.size)
        magic, _, header_size, payload = CONTAINER.unpack(head)
        if magic != MAGIC:
            if head[:8].strip(b"\0"):
                raise ValueError(f"{file.name}: no fatbin header at byte {pos} of its .nv_fatbin section")
            pos += 8                   # zero padding between containers (8-byte aligned)
            continue
        images, entry, stop = set(), pos + header_size, pos + header_size + payload
        while entry + ARCH_AT + 4 <= stop:
            file.seek(entry)
            header = file.read(ARCH_AT + 4)
            kind, _, entry_header, entry_payload = ENTRY.unpack_from(header)
            if entry_header == 0:
                break
            if kind in (PTX, CUBIN):
                images.add(Image(struct.unpack_from("<I", header, ARCH_AT)[0], kind))
            entry += entry_header + entry_payload
        yield frozenset(images)
        pos = stop
