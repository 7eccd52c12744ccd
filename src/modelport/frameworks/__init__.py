"""Framework adapters: one per library, all with the same small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelport.errors import FrameworkError
from modelport.frameworks.base import Adapter, Packed, Predictor
from modelport.frameworks.boosting import LightGBMAdapter, XGBoostAdapter
from modelport.frameworks.onnx import OnnxAdapter
from modelport.frameworks.sklearn import SklearnAdapter
from modelport.frameworks.torch import TorchAdapter

# Order matters for detection: specific libraries before the sklearn duck-typing fallback.
ADAPTERS: dict[str, Adapter] = {
    a.name: a for a in (XGBoostAdapter(), LightGBMAdapter(), TorchAdapter(), OnnxAdapter(), SklearnAdapter())
}


def get_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise FrameworkError(f"Unknown framework {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None


def adapter_for(obj: Any) -> Adapter:
    for adapter in ADAPTERS.values():
        if adapter.accepts(obj):
            return adapter
    raise FrameworkError(f"Cannot tell which framework a {type(obj).__module__}.{type(obj).__name__} belongs to; "
                         f"pass framework= (one of {', '.join(sorted(ADAPTERS))})")


def adapter_for_file(path: Path) -> Adapter:
    with open(path, "rb") as f:
        head = f.read(4096)
    for adapter in ADAPTERS.values():
        if adapter.accepts_file(path, head):
            return adapter
    raise FrameworkError(f"Cannot tell the framework of {path.name}; pass --framework "
                         f"(one of {', '.join(sorted(ADAPTERS))})")


__all__ = ["ADAPTERS", "Adapter", "Packed", "Predictor", "adapter_for", "adapter_for_file", "get_adapter"]
