"""A loaded model version: what the store recorded about it and its framework's predictor (no store here:
a server loads from an image's own files as well as from the store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.frameworks import Predictor, get_adapter
from modelport.store.version import ModelVersion


@dataclass
class Model:
    """A loaded, verified model version."""

    info: ModelVersion
    predictor: Predictor

    def predict(self, x: Any) -> np.ndarray:
        return self.predictor.predict(np.asarray(x, dtype=np.float64) if self.info.task != "tensor" else np.asarray(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.predictor.predict_proba(np.asarray(x, dtype=np.float64))


def model_from_files(info: ModelVersion, files: dict[str, bytes]) -> Model:
    """A model from its version's verified files (from the store, an image's directory, or a server's pinned copy)."""
    return Model(info, get_adapter(info.framework).load(files, info.signature, info.extra))
