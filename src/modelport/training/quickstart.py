"""The quickstart: a real dataset that ships with scikit-learn, trained and registered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from modelport import config
from modelport.extras import require
from modelport.training.trainer import TrainResult, train

NAME = "diabetes"
TARGET = "target"


def write_dataset(dest: Path) -> Path:
    """scikit-learn's diabetes data (442 patients, 10 features, disease progression) as a CSV."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    dest.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(dest, index=False)
    return dest


def run(progress: Callable[[str], None] = lambda _: None) -> tuple[TrainResult, Path, list[float]]:
    """→ (training result, the CSV written, the features of its first row as an example request)."""
    require("train", "The quickstart")
    import pandas as pd

    csv = write_dataset(config.home() / "quickstart" / "diabetes.csv")
    result = train(csv, TARGET, NAME, model="linear-regression", seed=0, progress=progress)
    first = pd.read_csv(csv, nrows=1).drop(columns=[TARGET]).iloc[0]
    return result, csv, [round(float(v), 6) for v in first]
