"""Shared libraries without their symbol tables and debug information, stripped where the image is built.

Some wheels ship their extension modules unstripped (uvloop's loop.so is 13.6 MB, 12 of them ``.symtab`` and
``.debug_*``). The image's build stage has no binutils and no network, so the host strips them: each shared
library of the wheelhouse goes through the host's ``strip --strip-unneeded`` (what Debian's packaging does to
every shared library), and the stripped copy goes into the build context at its site-packages path; the build
stage puts it in place of pip's (modelport.container.slim). The wheels themselves stay as published (the SBOM
describes them).

A copy is used only when what the dynamic loader reads is unchanged: the same ELF header (less the section
header table's place and count), the same program headers, and the same bytes in every segment. strip removes
only sections no segment holds, so a library it would change in any other way (e.g. one patchelf rewrote) is
left as it is. No ``strip`` on the host, or one for another machine (an arm64 image on an amd64 host): nothing is
stripped, and the image is as before. Each wheel's stripped copies are kept in the modelport home by the wheel's
sha256 (``digests``: the build's, which its SBOM uses too), so a rebuild copies them instead of stripping again."""

from __future__ import annotations

import hashlib
import platform
import shutil
import struct
import subprocess
import tempfile
import zipfile
from pathlib import Path

from modelport.container.cache import COMPLETE, cached_dir
from modelport.container.sbom import wheel_digests
from modelport.progress import Progress

MIN_SAVING = 64 * 1024  # smaller savings are not worth a file in the build context
_ELF64_LE = b"\x7fELF\x02\x01"


def strip_wheels(wheels: Path, dest: Path, machine: str, progress: Progress = lambda _: None,
                 digests: dict[str, str] | None = None) -> int:
    """Stripped copies of the shared libraries in ``wheels`` (``*.whl``) that lose at least ``MIN_SAVING``,
    under ``dest`` at their paths in site-packages; → the bytes saved. ``machine``: the wheels' (x86_64...)."""
    dest.mkdir(parents=True, exist_ok=True)
    tool = shutil.which("strip")
    if tool is None or machine != platform.machine():
        progress("Not stripping the wheels' shared libraries: " + ("no strip command here" if tool is None else
                 f"this machine's strip is for {platform.machine()}, the image's libraries are {machine}"))
        return 0
    saved = 0
    version = _tool_version(tool)
    digests = digests if digests is not None else wheel_digests(wheels)
    for whl in sorted(wheels.glob("*.whl")):
        stripped = _stripped_wheel(tool, version, whl, digests[whl.name], machine)
        shutil.copytree(stripped, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(_SAVED, COMPLETE))
        saved += int((stripped / _SAVED).read_text())
    progress(f"Stripped the wheels' shared libraries of symbols and debug information: {saved / 1e6:.1f} MB less")
    return saved


_SAVED = ".saved"  # in a cached wheel's directory: the bytes its copies save
# Part of the cache's key, with the wheel's sha256 and the strip tool's version: raise it when what a
# stripped copy is (the checks below) changes, so no cached copy made the old way is used.
_METHOD = "1"


def _tool_version(tool: str) -> str:
    proc = subprocess.run([tool, "--version"], capture_output=True, text=True)
    return (proc.stdout.splitlines() or [""])[0]


def _stripped_wheel(tool: str, version: str, whl: Path, digest: str, machine: str) -> Path:
    """The directory of ``whl``'s (sha256 ``digest``) stripped libraries (at their site-packages paths), from
    the cache or made now."""
    key = hashlib.sha256(f"{_METHOD}\n{machine}\n{version}\n{digest}".encode()).hexdigest()[:32]

    def make(staging: Path) -> None:
        saved = 0
        with tempfile.TemporaryDirectory(prefix="modelport-strip-") as tmp, zipfile.ZipFile(whl) as z:
            for info in z.infolist():
                name = info.filename
                if name.split("/", 1)[0].endswith(".data") or not _is_shared_library(name):
                    continue  # a wheel's .data/ goes elsewhere than site-packages
                original = Path(tmp, "original")
                with z.open(info) as src, original.open("wb") as out:
                    shutil.copyfileobj(src, out)
                saved += _strip(tool, original, staging / name)
        (staging / _SAVED).write_text(str(saved))

    return cached_dir("stripped", key, make)[0]


def _is_shared_library(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".so") or ".so." in base


def _strip(tool: str, original: Path, target: Path) -> int:
    stripped = original.with_name("stripped")
    proc = subprocess.run([tool, "--strip-unneeded", "-o", str(stripped), str(original)], capture_output=True)
    if proc.returncode != 0 or not stripped.is_file():
        return 0  # not an ELF file strip knows: left as it is
    saving = original.stat().st_size - stripped.stat().st_size
    if saving < MIN_SAVING or loaded_image(original.read_bytes()) != loaded_image(stripped.read_bytes()):
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(stripped, target)
    return saving


def loaded_image(data: bytes) -> tuple[bytes, list[tuple[int, ...]], list[bytes]] | None:
    """What the dynamic loader reads of a 64-bit little-endian ELF file: its header without the section header
    fields (e_shoff, e_shentsize, e_shnum, e_shstrndx), its program headers, each segment's bytes (with the
    header's section fields blanked where a segment holds the header); None for anything else."""
    if not data.startswith(_ELF64_LE) or len(data) < 64:
        return None
    header = bytearray(data[:64])
    header[0x28:0x30] = bytes(8)  # e_shoff
    header[0x3A:0x40] = bytes(6)  # e_shentsize, e_shnum, e_shstrndx
    blanked = bytes(header) + data[64:]
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phentsize < 56 or phoff + phnum * phentsize > len(data):
        return None
    # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
    phdrs = [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]
    return bytes(header), phdrs, [blanked[p[2]:p[2] + p[5]] for p in phdrs]
