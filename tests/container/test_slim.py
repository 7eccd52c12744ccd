"""What a model image's build stage cuts from its venv (modelport.container.slim), on a made-up site-packages."""

from __future__ import annotations

import py_compile
import subprocess
import sys
from pathlib import Path

from modelport.container.slim import slim


def test_cuts_what_serving_never_reads_and_the_rest_still_imports(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    files = {"lib/__init__.py": "", "lib/core.py": "ANSWER = 42\n", "lib/tests/test_core.py": "assert True\n",
             "lib/_fast.pyx": "cdef int x\n", "lib/include/lib.h": "int x;\n", "lib/broken.py": "def (:\n",
             "single.py": "VALUE = 'one file'\n", "modelport/__init__.py": "SOURCE = True\n",
             "lib-1.0.dist-info/METADATA": "Name: lib\n", "onnxruntime/capi/libonnxruntime.so.1.32.0": "C API",
             "onnxruntime/capi/onnxruntime_pybind11_state.so": "binding"}
    _write(site, files)
    for libs in ("a.libs", "b.libs"):  # the same vendored library twice, and one that only shares its name
        (site / libs).mkdir()
        (site / libs / "libgfortran-1234.so.5").write_bytes(b"\x7fELF" + b"x" * 1000)
        (site / libs / "libother.so").write_bytes(libs.encode() * 100)

    py_compile.compile(str(site / "lib/core.py"))  # pip compiles what it installs into __pycache__: moved, not redone
    saved = slim(site)

    assert not (site / "lib/tests").exists() and not (site / "lib/_fast.pyx").exists() and not (site / "lib/include/lib.h").exists()
    assert (site / "a.libs/libgfortran-1234.so.5").samefile(site / "b.libs/libgfortran-1234.so.5")
    assert not (site / "a.libs/libother.so").samefile(site / "b.libs/libother.so")
    assert not (site / "lib/core.py").exists() and (site / "lib/core.pyc").is_file() and not (site / "single.py").exists()
    assert not (site / "lib/__pycache__").exists() and (site / "lib/broken.py").is_file()  # never compiled: its source stays
    assert (site / "modelport/__init__.py").is_file() and (site / "lib-1.0.dist-info/METADATA").is_file()
    assert saved["tests"] == len("assert True\n") and saved["sources"] == len("cdef int x\n") + len("int x;\n")
    assert not (site / "onnxruntime/capi/libonnxruntime.so.1.32.0").exists() and (site / "onnxruntime/capi/onnxruntime_pybind11_state.so").exists()
    assert saved["unused"] == len("C API") and saved["duplicates"] == 1004 and saved["py"] == len("ANSWER = 42\n") + len("VALUE = 'one file'\n")
    probe = "import lib.core, single, modelport; print(lib.core.ANSWER, single.VALUE, modelport.SOURCE)"
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["42", "one", "file", "True"]


def test_puts_the_stripped_libraries_in_place_and_cuts_stubs_and_unused_distributions(tmp_path: Path) -> None:
    site, stripped = tmp_path / "site-packages", tmp_path / "stripped"
    files = {"lib/__init__.py": "", "lib/__init__.pyi": "x: int\n", "lib/py.typed": "", "lib/_native.so": "unstripped" * 10,
             "prettytable/__init__.py": "", "prettytable-3.0.dist-info/METADATA": "Name: prettytable\n",
             "wcwidth/__init__.py": "", "wcwidth-0.2.dist-info/METADATA": "Name: wcwidth\n",
             "skops-0.16.dist-info/METADATA": "Name: skops\n"}
    _write(site, files)
    (site / "lib/_native.so").chmod(0o755)
    (stripped / "lib").mkdir(parents=True)
    (stripped / "lib/_native.so").write_text("stripped")
    (stripped / "lib/_absent.so").write_text("pip did not install this one")

    saved = slim(site, stripped)

    assert (site / "lib/_native.so").read_text() == "stripped" and (site / "lib/_native.so").stat().st_mode & 0o777 == 0o755
    assert not (site / "lib/_absent.so").exists() and saved["stripped"] == len("unstripped" * 10) - len("stripped")
    assert not (site / "lib/__init__.pyi").exists() and not (site / "lib/py.typed").exists()
    assert sorted(p.name for p in site.iterdir()) == ["lib", "skops-0.16.dist-info"]


def _write(site: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
