"""Stripping the wheels' shared libraries on the host (modelport.container.strip), on a library compiled here."""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from modelport.container.strip import MIN_SAVING, loaded_image, strip_wheels

pytestmark = pytest.mark.skipif(not (shutil.which("cc") and shutil.which("strip")), reason="needs a C compiler and strip")


@pytest.fixture(autouse=True)
def _own_home(home: Path) -> None:
    """The stripped copies' cache is in the modelport home: each test's own."""

# Debug information and many symbols: far more than MIN_SAVING to strip.
SOURCE = "\n".join(f"static int helper_{i}(int x) {{ return x * {i} + 1; }}" for i in range(3000)) + """
int answer(int x) { int s = 0; """ + " ".join(f"s += helper_{i}(x);" for i in range(0, 3000, 7)) + """ return s; }
"""


def _wheel(tmp_path: Path) -> tuple[Path, bytes]:
    (tmp_path / "lib.c").write_text(SOURCE)
    subprocess.run(["cc", "-g", "-O0", "-shared", "-fPIC", "-o", str(tmp_path / "lib.so"), str(tmp_path / "lib.c")], check=True)
    data = (tmp_path / "lib.so").read_bytes()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "pkg-1.0-cp311-cp311-linux_x86_64.whl", "w") as z:
        z.writestr("pkg/_native.cpython-311-x86_64-linux-gnu.so", data)
        z.writestr("pkg.libs/libtiny.so.1", data[:100])  # not an ELF file strip can read: left alone
        z.writestr("pkg-1.0.data/scripts/tool.so", data)  # not in site-packages
        z.writestr("pkg/__init__.py", "")
    return wheels, data


def test_stripped_libraries_keep_what_the_loader_reads_and_still_work(tmp_path: Path) -> None:
    wheels, data = _wheel(tmp_path)
    saved = strip_wheels(wheels, tmp_path / "stripped", platform.machine())
    stripped = tmp_path / "stripped" / "pkg" / "_native.cpython-311-x86_64-linux-gnu.so"
    assert sorted(p.relative_to(tmp_path / "stripped").as_posix() for p in (tmp_path / "stripped").rglob("*") if p.is_file()) \
        == ["pkg/_native.cpython-311-x86_64-linux-gnu.so"]
    assert saved == len(data) - stripped.stat().st_size >= MIN_SAVING
    assert loaded_image(stripped.read_bytes()) == loaded_image(data) is not None
    assert ctypes.CDLL(str(stripped)).answer(2) == ctypes.CDLL(str(tmp_path / "lib.so")).answer(2)


def test_a_wheel_stripped_once_is_copied_from_the_cache_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels, _ = _wheel(tmp_path)
    first = strip_wheels(wheels, tmp_path / "first", platform.machine())

    def no_strip(*args: object) -> int:
        raise AssertionError("stripped again")

    monkeypatch.setattr("modelport.container.strip._strip", no_strip)
    assert strip_wheels(wheels, tmp_path / "second", platform.machine()) == first
    name = "pkg/_native.cpython-311-x86_64-linux-gnu.so"
    assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "first" / name).read_bytes()
    assert not [p for p in (tmp_path / "second").rglob(".*") if p.is_file()]  # the cache's own files stay there


def test_a_change_to_anything_the_loader_reads_is_seen(tmp_path: Path) -> None:
    _, data = _wheel(tmp_path)
    image = loaded_image(data)
    assert image is not None
    _, phdrs, _ = image
    load = next(p for p in phdrs if p[0] == 1 and p[5] > 0x1000)  # a PT_LOAD segment
    changed = bytearray(data)
    changed[load[2] + load[5] - 1] ^= 0xFF
    assert loaded_image(bytes(changed)) != image
    assert loaded_image(b"not an ELF file") is None


def test_nothing_is_stripped_for_another_machine(tmp_path: Path) -> None:
    wheels, _ = _wheel(tmp_path)
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    assert strip_wheels(wheels, tmp_path / "stripped", other) == 0 and not any((tmp_path / "stripped").iterdir())
