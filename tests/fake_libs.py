"""Files shaped like the ones research/gpu/ reads: ELF shared libraries with chosen sections, DT_NEEDED names and
soname, and `.nv_fatbin` payloads holding chosen cubins and PTX. Written with struct, as the reader reads them."""
from __future__ import annotations

import struct
from pathlib import Path

from research.gpu.fatbin import CUBIN, MAGIC

CU112_IMAGES = [(CUBIN, sm) for sm in (50, 60, 70, 80, 86)]      # what mxnet-cu112's libmxnet.so holds


def fatbin(containers: list[list[tuple[int, int]]], padding: int = 0) -> bytes:
    """Fatbin containers, one per list of (kind, sm) images, each image with a few bytes of stand-in code;
    `padding` zero bytes after each container, as a linker aligning them would leave."""
    out = b""
    for images in containers:
        payload = b""
        for kind, sm in images:
            code = bytes(range(24))
            header = struct.pack("<HHIQ", kind, 0x0101, 64, len(code)) + bytes(12) + struct.pack("<I", sm) + bytes(32)
            payload += header + code
        out += struct.pack("<IHHQ", MAGIC, 1, 16, len(payload)) + payload + bytes(padding)
    return out


def write_elf(path: Path, sections: dict[str, bytes] | None = None, needed: tuple[str, ...] = (),
              soname: str | None = None) -> Path:
    """A 64-bit little-endian ELF file with these PROGBITS sections and, when given, a .dynamic section."""
    items = [(name, 1, data, 0) for name, data in (sections or {}).items()]
    if needed or soname:
        strings, entries = b"\0", b""
        for tag, name in [(1, n) for n in needed] + ([(14, soname)] if soname else []):
            entries += struct.pack("<qQ", tag, len(strings))
            strings += name.encode() + b"\0"
        items.append((".dynstr", 3, strings, 0))
        items.append((".dynamic", 6, entries + struct.pack("<qQ", 0, 0), len(items)))  # link: .dynstr's index
    names = b"\0"
    headers = [bytes(64)]                                                               # section 0: null
    body, offset = b"", 64
    for name, kind, data, link in items + [(".shstrtab", 3, None, 0)]:
        if data is None:                                                                # the name table, last
            data = names + name.encode() + b"\0"
        headers.append(struct.pack("<IIQQQQIIQQ", len(names), kind, 0, 0, offset + len(body), len(data), link, 0, 1, 0))
        names += name.encode() + b"\0"
        body += data + bytes(-len(data) % 8)
    shoff = offset + len(body)
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01", 3, 62, 1, 0, 0, shoff, 0, 64, 56, 0, 64,
                         len(headers), len(headers) - 1)
    path.write_bytes(header + body + b"".join(headers))
    return path
