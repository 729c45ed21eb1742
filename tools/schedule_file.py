"""A Layer 3 schedule read from the user's file (CSV or Parquet), every mistake one line.

The first column (or a Parquet file's index) holds the slot starts, ISO 8601 with a UTC
offset; every other column is numbers. A mistake names the file, the row or column and the
value, as ``CliError`` (exit 2): the schedule is never half-read or sent with a guess.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from tools.cli_errors import CliError, first_line

_EXAMPLE_TIME = "2025-01-15T08:00:00+00:00"


def read_schedule(path: Path) -> pd.DataFrame:
    """The schedule in ``path``: a timezone-aware DatetimeIndex and numeric columns."""
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if path.is_dir():
        raise CliError(f"{path}: is a directory, not a schedule file")
    df = _read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else _read_csv(path)
    df.index = _slot_starts(path, df.index)
    for column in [c for c, dtype in df.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)
                   or pd.api.types.is_bool_dtype(dtype)]:  # a wide schedule is numbers: touch only the others
        df[column] = _numbers(path, df, column)
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise CliError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow): {first_line(exc)}") from None
    except Exception as exc:  # pyarrow's errors share no base class worth naming
        raise CliError(f"{path}: not a readable Parquet file: {first_line(exc)}") from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, index_col=0)
    except pd.errors.EmptyDataError:
        raise CliError(f"{path}: is empty; a schedule needs a header row and one row per slot") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise CliError(f"{path}: not a readable CSV file: {first_line(exc)}") from None
    if not len(df.columns):
        raise CliError(f"{path}: no columns besides the timestamps (is it comma-separated?)")
    if any(str(c).startswith("Unnamed:") for c in df.columns):
        raise CliError(f"{path}: a column has no name in the header row")
    return df


def _slot_starts(path: Path, index: pd.Index) -> pd.DatetimeIndex:
    """The first column as aware timestamps; the first that is not one is named."""
    if isinstance(index, pd.DatetimeIndex):
        parsed = index
    else:
        text = index.astype(str)
        parsed_or_nat = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        for row, (raw, value) in enumerate(zip(text, parsed_or_nat, strict=True), start=1):
            if pd.isna(value):
                raise CliError(f"{path}: row {row}: timestamp {_show(raw)} is not an ISO 8601 date"
                               f" (e.g. {_EXAMPLE_TIME})")
        naive = [raw for raw in text if pd.Timestamp(raw).tzinfo is None]
        if naive:
            raise CliError(f"{path}: timestamp {_show(naive[0])} has no UTC offset (e.g. {_EXAMPLE_TIME})")
        parsed = pd.DatetimeIndex(parsed_or_nat)
    if parsed.tz is None:
        raise CliError(f"{path}: the timestamps have no UTC offset (e.g. {_EXAMPLE_TIME})")
    return parsed


def _numbers(path: Path, df: pd.DataFrame, column: object) -> pd.Series:
    """The column as numbers; the first cell that is not a number is named (empty = no value)."""
    values = df[column]
    if pd.api.types.is_bool_dtype(values.dtype):
        raise CliError(f"{path}: column {column}: true/false values, not numbers (kW)")
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    for at, raw, number in zip(df.index, values, numbers, strict=True):
        if pd.isna(number) and not pd.isna(raw) and str(raw).strip():
            raise CliError(f"{path}: column {column}, slot {at.isoformat()}: {_show(raw)} is not a number")
    return numbers


def _show(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_asset_map(value: str) -> dict[str, str]:
    """A JSON file of ``{"key": "asset_id"}``, or ``key=asset_id`` pairs separated by commas."""
    if os.path.exists(value) or value.lower().endswith(".json"):
        return _asset_map_file(Path(value))
    pairs = [p.split("=", 1) for p in value.split(",") if p]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise CliError(f"--asset-map {_show(value)}: takes a JSON file or key=asset_id,key=asset_id")
    return {k.strip(): v.strip() for k, v in pairs}


def _asset_map_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{path}: no such file (--asset-map)") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or first_line(exc)}") from None
    if not isinstance(data, dict) or not data:
        raise CliError(f'{path}: must hold a JSON object such as {{"ev_001": "ast_bay_1"}}')
    for key, asset in data.items():
        if not isinstance(asset, str) or not asset:
            raise CliError(f"{path}: key {key!r}: the asset id must be a non-empty string")
    return data
