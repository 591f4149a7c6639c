"""Request bodies to :class:`Call` objects: orjson and numpy for the arrays, the pydantic request models of
:mod:`server.schemas` for everything else, and :mod:`model.npz` for ``.npz`` uploads.

These functions run in worker processes (:mod:`server.offload`), so this module stays free of torch. Every
failure is an :class:`InputError` whose field is a path a person reads (``x[3][1]``, ``quantiles.0``, ``x.npy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from model.npz import read_members, read_npz
from model.validation import (
    DISCRETENESS,
    MAX_PAIRWISE_COLUMNS,
    MAX_SCREEN_COLUMNS,
    InputError,
    Limits,
    parse_discreteness,
    parse_levels,
)
from server.schemas import (
    ARRAY_FIELDS,
    CONDITION_FIELD,
    BatchRequest,
    EstimateOptions,
    EstimateRequest,
    PairOptions,
    PairwiseRequest,
    ScreenOptions,
    ScreenRequest,
    TableOptions,
)

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Call:
    """One estimate request, parsed: float64 arrays and validated options; ``z`` set for I(X; Y | Z)."""

    x: np.ndarray
    y: np.ndarray
    options: PairOptions
    z: np.ndarray | None = None


@dataclass(frozen=True)
class BatchCall:
    """A batch request, parsed: each item a pair or the error that refused it alone."""

    items: list[Pair | InputError]
    options: PairOptions

    @property
    def numbers(self) -> int:
        return sum(x.size + y.size for x, y in (p for p in self.items if isinstance(p, tuple)))


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InputError("body", f"not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise InputError("body", "must be a JSON object")
    return obj


def options(
    fields: dict[str, Any], request: type[BaseModel], model: type[EstimateOptions] = EstimateOptions
) -> EstimateOptions:
    """The non-array fields checked against ``model``; an error names the first bad field."""
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        if first["type"] == "extra_forbidden":
            raise InputError(field, f"unknown field; allowed: {', '.join(request.model_fields)}") from None
        raise InputError(field, first["msg"]) from None


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
    """A JSON list of rows (or a flat list, one column) as float64 ``(n, d)`` or ``(n,)``."""
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


def estimate_call(body: bytes) -> Call:
    """``POST /estimate``: a JSON :class:`EstimateRequest`."""
    obj = _json_body(body)
    arrays = {k: obj.pop(k, None) for k in ARRAY_FIELDS}
    z = obj.pop(CONDITION_FIELD, None)
    opts = options(obj, EstimateRequest, PairOptions)
    return Call(json_matrix(arrays["x"], "x"), json_matrix(arrays["y"], "y"), opts,
                None if z is None else json_matrix(z, CONDITION_FIELD))  # fmt: skip


def batch_call(body: bytes, max_items: int, max_numbers: int) -> BatchCall:
    """``POST /estimate/batch``: a JSON :class:`BatchRequest`; every bound of the batch is checked here, before
    any estimate starts."""
    obj = _json_body(body)
    items = obj.pop("items", None)
    opts = options(obj, BatchRequest, PairOptions)
    if not isinstance(items, list):
        raise InputError("items", "must be a list of {x, y} objects")
    if len(items) > max_items:
        raise InputError("items", f"has {len(items)} entries; at most {max_items}")
    parsed: list[Pair | InputError] = []
    for i, item in enumerate(items):  # each item stands alone: a bad one fails without the others
        try:
            if not isinstance(item, dict) or set(item) - set(ARRAY_FIELDS):
                raise InputError(f"items[{i}]", "must be an object with fields x and y")
            parsed.append((json_matrix(item.get("x"), f"items[{i}].x"), json_matrix(item.get("y"), f"items[{i}].y")))
        except InputError as err:
            parsed.append(err)
    call = BatchCall(parsed, opts)
    if call.numbers > max_numbers:
        raise InputError("items", f"the batch holds {call.numbers} numbers; at most {max_numbers}: split it")
    return call


@dataclass(frozen=True)
class TableCall:
    """A screening (``target`` set) or pairwise request, parsed."""

    x: np.ndarray
    target: np.ndarray | None
    options: TableOptions


def screen_call(body: bytes) -> TableCall:
    """``POST /estimate/screen``: a JSON :class:`ScreenRequest`."""
    obj = _json_body(body)
    x, target = obj.pop("x", None), obj.pop("target", None)
    return TableCall(json_matrix(x, "x"), json_matrix(target, "target"), options(obj, ScreenRequest, ScreenOptions))


def pairwise_call(body: bytes) -> TableCall:
    """``POST /estimate/pairwise``: a JSON :class:`PairwiseRequest` (quantiles do not apply)."""
    obj = _json_body(body)
    x = obj.pop("x", None)
    opts = options(obj, PairwiseRequest, TableOptions)
    if opts.quantiles is not None:
        raise InputError("quantiles", "pairwise answers the median and the 90 % bounds; omit quantiles")
    return TableCall(json_matrix(x, "x"), None, opts)


def npz_call(
    body: bytes, limits: Limits, quantiles: str | None, method: str, model: str, discrete_x: str = "false",
    discrete_y: str = "false", discrete_z: str = "auto",
) -> Call:  # fmt: skip
    """``POST /estimate/npz``: the body is an ``.npz`` of ``x`` and ``y`` (and ``z`` for I(X; Y | Z)); options
    come as query parameters (``quantiles`` comma-separated)."""
    fields = {
        "quantiles": parse_levels(quantiles),
        "method": method,
        "model": model,
        "discrete_x": parse_discreteness(discrete_x, "discrete_x"),
        "discrete_y": parse_discreteness(discrete_y, "discrete_y"),
        "discrete_z": parse_discreteness(discrete_z, "discrete_z"),
    }
    opts = options(fields, EstimateRequest, PairOptions)
    x, y, z = read_npz(body, limits)
    return Call(x, y, opts, z)


def npz_table_call(
    body: bytes, limits: Limits, screen: bool, quantiles: str | None, method: str, model: str, columns: str | None,
    discrete_features: str = "auto", discrete_target: str = "false",
) -> TableCall:  # fmt: skip
    """``POST /estimate/screen/npz`` (``screen``: arrays ``x`` and ``target``) and ``/estimate/pairwise/npz`` (array
    ``x``); options come as query parameters (``quantiles``, ``columns`` and a list of ``discrete_features``
    comma-separated)."""
    names = None if columns is None else [c.strip() for c in columns.split(",")]
    listed = discrete_features.lower() not in DISCRETENESS
    fields = {"quantiles": parse_levels(quantiles), "method": method, "model": model, "columns": names,
              "discrete_features": [c.strip() for c in discrete_features.split(",")] if listed
              else parse_discreteness(discrete_features, "discrete_features")}  # fmt: skip
    if screen:
        fields["discrete_target"] = parse_discreteness(discrete_target, "discrete_target")
    opts = options(fields, ScreenRequest if screen else PairwiseRequest, ScreenOptions if screen else TableOptions)
    if not screen and opts.quantiles is not None:
        raise InputError("quantiles", "pairwise answers the median and the 90 % bounds; omit quantiles")
    cap = MAX_SCREEN_COLUMNS if screen else MAX_PAIRWISE_COLUMNS
    arrays = read_members(body, limits, ("x", "target") if screen else ("x",), max_columns={"x": cap})
    return TableCall(arrays["x"], arrays.get("target"), opts)
