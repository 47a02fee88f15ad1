"""Just enough ELF64 (little-endian, as every x86-64 and aarch64 Linux library) to read a shared library's
sections, the libraries it links (DT_NEEDED) and its own name (DT_SONAME), with struct and seeks: the cu112
libmxnet.so is 891 MB and only a few KB of it are read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEADER = struct.Struct("<16sHHIQQQIHHHHHH")      # Elf64_Ehdr
SECTION = struct.Struct("<IIQQQQIIQQ")           # Elf64_Shdr
DYNAMIC = struct.Struct("<qQ")                   # Elf64_Dyn: tag, value
DT_NEEDED, DT_SONAME = 1, 14


class ElfError(ValueError):
    """The file is not a 64-bit little-endian ELF file, or its headers point outside it."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int          # in the file
    size: int
    link: int            # for .dynamic: the index of its string table


def sections(file: BinaryIO) -> list[Section]:
    """The section headers, named from the section-name string table."""
    file.seek(0)
    head = file.read(HEADER.size)
    if len(head) < HEADER.size or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF file")
    *_, shoff, _, _, _, _, shentsize, shnum, shstrndx = HEADER.unpack(head)
    if shoff == 0:
        return []
    file.seek(shoff)
    raw = [SECTION.unpack(file.read(shentsize)[:SECTION.size]) for _ in range(max(shnum, 1))]
    if shnum == 0:                   # more than 0xff00 sections: the count is in section 0's size
        count = raw[0][5]
        raw += [SECTION.unpack(file.read(shentsize)[:SECTION.size]) for _ in range(count - 1)]
    if shstrndx == 0xFFFF:           # and the name table's index in section 0's link
        shstrndx = raw[0][6]
    names = _read(file, raw[shstrndx][4], raw[shstrndx][5])
    return [Section(_string(names, sh[0]), sh[1], sh[4], sh[5], sh[6]) for sh in raw]


def find_section(file: BinaryIO, name: str) -> Section | None:
    return next((s for s in sections(file) if s.name == name), None)


def dynamic_names(path: Path) -> tuple[list[str], str | None]:
    """(DT_NEEDED names in link order, DT_SONAME or None) of a shared library."""
    with open(path, "rb") as file:
        table = sections(file)
        dynamic = next((s for s in table if s.name == ".dynamic"), None)
        if dynamic is None:
            return [], None
        strings = _read(file, table[dynamic.link].offset, table[dynamic.link].size)
        entries = _read(file, dynamic.offset, dynamic.size)
    needed, soname = [], None
    for start in range(0, len(entries) - DYNAMIC.size + 1, DYNAMIC.size):
        tag, value = DYNAMIC.unpack_from(entries, start)
        if tag == 0:                 # DT_NULL ends the table
            break
        if tag == DT_NEEDED:
            needed.append(_string(strings, value))
        elif tag == DT_SONAME:
            soname = _string(strings, value)
    return needed, soname


def _read(file: BinaryIO, offset: int, size: int) -> bytes:
    file.seek(offset)
    data = file.read(size)
    if len(data) != size:
        raise ElfError(f"a section at byte {offset} runs past the end of the file")
    return data


def _string(table: bytes, offset: int) -> str:
    return table[offset:table.index(b"\0", offset)].decode(errors="replace")
