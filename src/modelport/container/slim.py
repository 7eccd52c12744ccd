"""What a model image's virtual environment can do without, removed in the image's build stage:
``python -m modelport.container.slim SITE_PACKAGES [STRIPPED]`` (standard library only: it runs in the image's
venv, after pip installed the lock and before the final stage copies the venv).

First, the shared libraries the host stripped (``STRIPPED``, container.strip: the same files without their
symbol tables and debug information, their loaded bytes checked identical) take the place of pip's copies.
Then each cut is something serving never reads:

* test suites (``tests`` directories: a third of SciPy's and NumPy's files);
* C, C++ and Cython sources and headers (for compiling against a package, not for running it), and type stubs
  (``.pyi``, ``py.typed``: for type checkers);
* second copies of a shared library: auditwheel vendors the same ``libgfortran`` into ``numpy.libs`` and
  ``scipy.libs`` under the same hashed name; one is hard-linked to the other;
* files a package ships that its Python import never loads (``UNUSED``, each with the reason);
* the ``.py`` sources of other packages than modelport, replaced by their bytecode next to where they were
  (``X.pyc``, which Python imports without the source): the image keeps one copy of each module, not two.
  Tracebacks from inside those libraries show file and line, not the line's text; modelport's own code
  keeps its sources.

The build stage then loads the model (``python -m modelport.serving serve REF --check``), so a cut that
broke an import fails the build, not the first request."""

from __future__ import annotations

import compileall
import filecmp
import os
import shutil
import sys
from pathlib import Path

TEST_DIRS = frozenset({"tests"})
BUILD_ONLY = frozenset({".c", ".cc", ".cpp", ".h", ".hpp", ".pyx", ".pxd", ".pxi", ".pyi"})
TYPING_MARKER = "py.typed"
KEEP_SOURCES = frozenset({"modelport"})  # top-level packages whose .py stay
# Shipped but never loaded from Python, by glob under site-packages.
UNUSED = {
    # 35 MB: the C API's library, for programs linking onnxruntime. The Python binding holds the runtime
    # itself (onnxruntime_pybind11_state needs only libc, libstdc++ and libonnxruntime_providers_shared).
    "onnxruntime/capi/libonnxruntime.so.*": "onnxruntime's C API library",
    # 1.5 MB: NumPy's SIMD intrinsics exposed for its own test suite; numpy never imports it itself.
    "numpy/_core/_simd.*": "NumPy's SIMD test module",
    # 0.9 MB: the deprecated extension-building tool (setuptools'); importing NumPy does not load it.
    "numpy/distutils": "numpy.distutils, for building extensions",
    # 1.5 MB: the sample data sets' files (load_iris, load_sample_images...); a model never reads them.
    "sklearn/datasets/data": "scikit-learn's sample data sets",
    "sklearn/datasets/descr": "scikit-learn's sample data sets' descriptions",
    "sklearn/datasets/images": "scikit-learn's sample images",
    # 5 MB: skops requires prettytable (and it wcwidth) for its model cards (skops.card); loading a .skops file
    # (skops.io) imports neither. The distributions go whole, metadata too: the image does not claim them.
    "prettytable": "skops' model cards' tables",
    "prettytable-*.dist-info": "skops' model cards' tables",
    "wcwidth": "prettytable's character widths",
    "wcwidth-*.dist-info": "prettytable's character widths",
}


def _size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.lstat().st_size


def slim(site: Path, stripped: Path | None = None) -> dict[str, int]:
    """Cut ``site`` (a site-packages directory) as described above → bytes removed per kind of cut."""
    saved = {"stripped": _put_stripped(site, stripped) if stripped else 0,
             "tests": 0, "sources": 0, "duplicates": 0, "unused": 0, "py": 0}
    for root, dirs, files in os.walk(site):
        for d in [d for d in dirs if d in TEST_DIRS]:
            saved["tests"] += _size(Path(root, d))
            shutil.rmtree(Path(root, d))
            dirs.remove(d)
        for f in files:
            path = Path(root, f)
            if path.suffix in BUILD_ONLY or f == TYPING_MARKER:
                saved["sources"] += path.lstat().st_size
                path.unlink()
    saved["duplicates"] = _link_duplicate_libraries(site)
    for pattern in UNUSED:
        for path in site.glob(pattern):
            saved["unused"] += _size(path)
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for top in sorted(site.iterdir()):
        if top.name not in KEEP_SOURCES and not top.name.endswith((".dist-info", ".libs")):
            saved["py"] += _sourceless(top)
    return saved


def _put_stripped(site: Path, stripped: Path) -> int:
    """Each file under ``stripped`` replaces the one at the same path under ``site`` (only where pip put one)."""
    saved = 0
    for new in sorted(p for p in stripped.rglob("*") if p.is_file()):
        old = site / new.relative_to(stripped)
        if old.is_file() and not old.is_symlink():
            saved += old.stat().st_size - new.stat().st_size
            shutil.copyfile(new, old)  # keeps the installed file's mode
    return saved


def _link_duplicate_libraries(site: Path) -> int:
    """Hard-link libraries vendored twice (same name, same bytes) in the wheels' ``*.libs`` directories."""
    first: dict[str, Path] = {}
    saved = 0
    for lib in sorted(site.glob("*.libs/*")):
        if not lib.is_file() or lib.is_symlink():
            continue
        if (seen := first.setdefault(lib.name, lib)) is not lib and filecmp.cmp(seen, lib, shallow=False):
            saved += lib.stat().st_size
            lib.unlink()
            os.link(seen, lib)
    return saved


def _sourceless(top: Path) -> int:
    """Put the bytecode pip compiled at install (``__pycache__/X.cpython-311.pyc``) where Python imports it
    without a source (``X.pyc``), and drop the source; a module pip did not compile is compiled here. A file
    that does not compile keeps its source (Python never imports it anyway)."""
    sources = ([top] if top.suffix == ".py" else []) if top.is_file() else list(top.rglob("*.py"))
    saved = 0
    for src in sources:
        compiled = src.parent / "__pycache__" / f"{src.stem}.{sys.implementation.cache_tag}.pyc"
        if compiled.is_file():
            os.replace(compiled, src.with_suffix(".pyc"))
        elif not compileall.compile_file(src, legacy=True, quiet=2):
            continue
        if src.with_suffix(".pyc").is_file():
            saved += src.stat().st_size
            src.unlink()
    for cache in [] if top.is_file() else list(top.rglob("__pycache__")):  # optimized levels, leftovers
        shutil.rmtree(cache)
    return saved


def main() -> None:
    site = Path(sys.argv[1])
    saved = slim(site, Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print("modelport slim: removed " + ", ".join(f"{kind} {n / 1e6:.1f} MB" for kind, n in saved.items()), flush=True)


if __name__ == "__main__":
    main()
