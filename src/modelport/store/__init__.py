"""The model store. ``ModelStore`` (the registry's database, SQLAlchemy) is imported on first use: what serves
models in an image reads them without it (``models_to_serve``)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from modelport import config
from modelport.store.refs import Ref, parse_ref
from modelport.store.version import FileEntry, ModelVersion

if TYPE_CHECKING:
    from modelport.store.bundle import BundleDirectory
    from modelport.store.registry import ModelStore

__all__ = ["FileEntry", "ModelStore", "ModelVersion", "Ref", "models_to_serve", "parse_ref"]


def models_to_serve() -> ModelStore | BundleDirectory:
    """Where a server finds its models: a model image's own version (``MODELPORT_MODEL_DIR``, an unpacked
    bundle), else the store."""
    if (directory := config.model_dir()) is not None:
        from modelport.store.bundle import BundleDirectory

        return BundleDirectory(directory)
    from modelport.store.registry import ModelStore

    return ModelStore()


def __getattr__(name: str) -> Any:  # PEP 562: ModelStore, and SQLAlchemy with it, only when asked for
    if name != "ModelStore":
        raise AttributeError(f"module 'modelport.store' has no attribute {name!r}")
    value = import_module("modelport.store.registry").ModelStore
    globals()[name] = value
    return value
