"""Reading a training CSV, with errors that name the column and the line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.errors import DataError


@dataclass
class Dataset:
    features: list[str]
    x: object  # pandas.DataFrame of float64
    y: object  # pandas.Series


def _lines(index: object, limit: int = 5) -> str:
    # Row i of the frame is line i + 2 of the file (line 1 is the header).
    rows = [int(i) + 2 for i in list(index)[:limit]]
    more = len(index) - limit  # type: ignore[arg-type]
    return ", ".join(map(str, rows)) + (f" and {more} more" if more > 0 else "")


def load_csv(path: str | Path, target: str, *, classification: bool = False) -> Dataset:
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"No such file: {path}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header line and rows of data") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable CSV file: {e}") from None
    if frame.empty:
        raise DataError(f"{path} has a header but no rows of data")
    if target not in frame.columns:
        raise DataError(f"Target column {target!r} not found in {path.name}; columns are: {', '.join(map(str, frame.columns))}")
    features = [str(c) for c in frame.columns if c != target]
    if not features:
        raise DataError(f"{path.name} has only the target column {target!r}: there are no features to learn from")

    x = frame[features]
    for col in features:
        if not pd.api.types.is_numeric_dtype(x[col]) or pd.api.types.is_bool_dtype(x[col]):
            converted = pd.to_numeric(x[col], errors="coerce")
            bad = x[col][converted.isna() & x[col].notna()]
            if len(bad):
                raise DataError(
                    f"Column {col!r} is not numeric (line {int(bad.index[0]) + 2}: {bad.iloc[0]!r}). "
                    "Encode it as numbers (e.g. one-hot) or drop the column before training."
                )
    x = x.apply(pd.to_numeric).astype("float64")
    missing = x.isna()
    if missing.to_numpy().any():
        col = missing.any()[lambda s: s].index[0]
        raise DataError(f"Column {col!r} has missing values on line(s) {_lines(x.index[missing[col]])}; "
                        "fill or drop those rows before training")
    y = frame[target]
    if y.isna().any():
        raise DataError(f"Target column {target!r} has missing values on line(s) {_lines(y.index[y.isna()])}")
    if not classification and not pd.api.types.is_numeric_dtype(y):
        raise DataError(f"Target column {target!r} is not numeric (e.g. {y.iloc[0]!r}); "
                        "use a classifier (--model logistic-regression or random-forest-classifier) for labels")
    if classification and pd.api.types.is_float_dtype(y) and not (fractional := y[y != y.round()]).empty:
        # scikit-learn would stop with "Unknown label type: continuous" after the split.
        raise DataError(f"Target column {target!r} holds continuous values (line {int(fractional.index[0]) + 2}: "
                        f"{float(fractional.iloc[0])}): a classifier needs class labels. To predict a number, use a "
                        "regression model: --model linear-regression, ridge, random-forest or gradient-boosting")
    return Dataset(features, x, y)
