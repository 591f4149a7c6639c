"""User ``.npz`` files (arrays ``x`` and ``y``, and ``z`` to condition on) read defensively: every member's header
is checked before anything inflates, and every failure is an :class:`InputError` in words, never a Python
internal."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from model.validation import InputError, Limits

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
HEADER_SLACK = 4096  # bytes an .npy member may hold beyond its numbers (magic and header)


def _header(handle, field: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
    except Exception:  # whatever breaks, the answer is the same sentence
        raise InputError(field, "is not an .npy array (its magic bytes are wrong)") from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise InputError(field, f"has .npy format version {version}; versions 1.0–3.0 are read")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        return reader(handle)
    except Exception:  # a cut or crafted header: its parser's message would leak internals
        raise InputError(field, "has a malformed .npy header (cut short or not a plain shape/dtype header)") from None


def _member(archive: zipfile.ZipFile, name: str, limits: Limits, max_columns: int) -> np.ndarray:
    """Read ``name`` + ``.npy`` after checking its header: shape and dtype are refused before anything inflates."""
    field = f"{name}.npy"
    info = archive.getinfo(field)
    max_bytes = limits.max_cells * 8 + HEADER_SLACK
    if info.file_size > max_bytes:
        raise InputError(field, f"inflates to {info.file_size} bytes; at most {max_bytes} are accepted")
    try:
        with archive.open(info) as handle:
            shape, fortran, dtype = _header(handle, field)
            if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
                raise InputError(field, f"has dtype {dtype}; send numbers")
            if len(shape) not in (1, 2) or 0 in shape:
                raise InputError(field, f"has shape {shape}; send an (n, d) or (n,) array")
            if shape[0] > limits.max_n or (len(shape) == 2 and shape[1] > max_columns):
                raise InputError(field, f"has shape {shape}; at most {limits.max_n} rows and {max_columns} columns")
            if int(np.prod(shape)) > limits.max_cells:
                raise InputError(field, f"has shape {shape}; at most {limits.max_cells} numbers are accepted")
            count = int(np.prod(shape))
            raw = handle.read(count * dtype.itemsize + 1)
    except InputError:
        raise
    except Exception:  # zlib, zip CRC, truncation, encryption: all one corrupt archive to the user
        raise InputError(field, "cannot be read: the archive is corrupt or truncated") from None
    if len(raw) != count * dtype.itemsize:
        raise InputError(field, "is truncated or longer than its header says")
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return arr.astype(np.float64)


def read_members(
    body: bytes, limits: Limits, required: tuple[str, ...], optional: tuple[str, ...] = (),
    max_columns: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The named arrays of an ``.npz`` file's bytes (an optional one absent is left out), each member's header
    checked before it inflates; a member has at most ``limits.max_dim`` columns unless ``max_columns`` says."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except Exception:
        raise InputError("body", f"is not a readable .npz file (a zip of .npy arrays {', '.join(required)})") from None
    with archive:
        names = set(archive.namelist())
        missing = [name for name in required if f"{name}.npy" not in names]
        if missing:
            extra = f" (and {', '.join(optional)} if wanted)" if optional else ""
            raise InputError("body", f"the .npz must contain arrays named {', '.join(required)}{extra}; "
                             f"{', '.join(missing)} missing")  # fmt: skip
        wanted = [*required, *(name for name in optional if f"{name}.npy" in names)]
        caps = max_columns or {}
        return {name: _member(archive, name, limits, caps.get(name, limits.max_dim)) for name in wanted}


def read_npz(body: bytes, limits: Limits = Limits()) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``x``, ``y`` and ``z`` (None when absent) from the bytes of an ``.npz`` file, with every member checked
    before it is inflated."""
    arrays = read_members(body, limits, ("x", "y"), ("z",))
    return arrays["x"], arrays["y"], arrays.get("z")
