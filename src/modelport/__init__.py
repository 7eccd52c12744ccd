"""modelport: from a trained model to a running, monitored container service."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from modelport import errors  # noqa: F401 (modelport.errors.ModelportError after a bare `import modelport`; no imports of its own)

if TYPE_CHECKING:
    from modelport.api import Model, get_store, import_model, load_model, save_model
    from modelport.store import ModelStore, ModelVersion

# The public API, imported on first use (PEP 562): `import modelport` (which every `modelport` command and
# server worker does) would otherwise load SQLAlchemy and every framework adapter (half a second) for
# commands that need neither.
_LAZY = {"Model": "modelport.api", "get_store": "modelport.api", "import_model": "modelport.api",
         "load_model": "modelport.api", "save_model": "modelport.api",
         "ModelStore": "modelport.store", "ModelVersion": "modelport.store"}

__all__ = ["Model", "ModelStore", "ModelVersion", "__version__", "get_store", "import_model", "load_model", "save_model"]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # looked up when asked: importlib.metadata is a model server's start's too
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("modelport")
        except PackageNotFoundError:  # running from a source tree
            value = "0.0.0"
        globals()[name] = value
        return value
    if name not in _LAZY:
        raise AttributeError(f"module 'modelport' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})
