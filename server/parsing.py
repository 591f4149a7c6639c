"""Request bodies to numpy, off the event loop: orjson for JSON, header-first reading for ``.npz``.

Every failure is an :class:`InputError` whose field is a path a person reads (``x[3][1]``, ``body``, ``x.npy``).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import orjson

from model.estimator import DEFAULT_QUANTILES
from model.validation import InputError, Limits

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def json_object(body: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Parse a JSON object body and refuse unknown fields."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InputError("body", f"not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise InputError("body", f"must be a JSON object with fields {', '.join(allowed)}")
    for key in obj:
        if key not in allowed:
            raise InputError(key, f"unknown field; allowed: {', '.join(allowed)}")
    return obj


def _first_bad_entry(value: Any, field: str) -> InputError:
    """The first element that keeps ``value`` from being a table of numbers, named by its path."""
    if not isinstance(value, list):
        return InputError(field, f"must be a list of rows of numbers, got {type(value).__name__}")
    row_len = None
    for i, row in enumerate(value):
        items = row if isinstance(row, list) else [row]
        if isinstance(row, list):
            if row_len is None:
                row_len = len(row)
            elif len(row) != row_len:
                return InputError(f"{field}[{i}]", f"has {len(row)} numbers but {field}[0] has {row_len}")
        for j, v in enumerate(items):
            path = f"{field}[{i}][{j}]" if isinstance(row, list) else f"{field}[{i}]"
            if isinstance(v, list):
                return InputError(field, "is a 3-D array; send rows of numbers (n × d)")
            if v is None:
                return InputError(path, "null is not a number")
            if isinstance(v, bool) or not isinstance(v, int | float):
                return InputError(path, f"{type(v).__name__} {v!r:.20} is not a number; send JSON numbers")
    return InputError(field, "must be a list of rows of numbers")


def json_matrix(value: Any, field: str) -> np.ndarray:
    """A JSON list of rows (or a flat list, one column) as float64 ``(n, d)``."""
    if value is None:
        raise InputError(field, "is required")
    try:
        arr = np.array(value)
    except (ValueError, TypeError):
        raise _first_bad_entry(value, field) from None
    if arr.dtype.kind not in "iuf" or arr.ndim not in (1, 2):
        if arr.ndim > 2 and arr.dtype.kind in "iuf":
            raise InputError(field, f"is a {arr.ndim}-D array; send rows of numbers (n × d)")
        raise _first_bad_entry(value, field)
    return arr.astype(np.float64, copy=False)


def json_quantiles(value: Any) -> list[float]:
    if value is None:
        return list(DEFAULT_QUANTILES)
    if not isinstance(value, list) or not all(isinstance(q, int | float) and not isinstance(q, bool) for q in value):
        raise InputError("quantiles", "must be a list of numbers in [0.025, 0.975]")
    return [float(q) for q in value]


def _member(archive: zipfile.ZipFile, name: str, limits: Limits) -> np.ndarray:
    """Read ``name`` + ``.npy`` after checking its header: shape and dtype are refused before anything inflates."""
    field = f"{name}.npy"
    try:
        info = archive.getinfo(field)
    except KeyError:
        raise InputError("body", "the .npz must contain arrays named 'x' and 'y'") from None
    max_bytes = limits.max_n * limits.max_dim * 8 + 4096
    if info.file_size > max_bytes:
        raise InputError(field, f"inflates to {info.file_size} bytes; at most {max_bytes} are accepted")
    try:
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
                raise InputError(field, f"has dtype {dtype}; send numbers")
            if len(shape) not in (1, 2) or 0 in shape:
                raise InputError(field, f"has shape {shape}; send an (n, d) or (n,) array")
            if shape[0] > limits.max_n or (len(shape) == 2 and shape[1] > limits.max_dim):
                raise InputError(field, f"has shape {shape}; at most {limits.max_n} rows and {limits.max_dim} columns")
            count = int(np.prod(shape))
            raw = handle.read(count * dtype.itemsize + 1)
            if len(raw) != count * dtype.itemsize:
                raise InputError(field, "is truncated or longer than its header says")
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as err:
        raise InputError(field, f"cannot be read: {err}") from None
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return arr.astype(np.float64)


def npz_pair(body: bytes, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` from an ``.npz`` body, with every member checked before it is inflated."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InputError("body", "is not a readable .npz file (a zip of .npy arrays x and y)") from None
    with archive:
        return _member(archive, "x", limits), _member(archive, "y", limits)
