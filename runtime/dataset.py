"""Labelled data sets for calibration and accuracy: `.npz` files or the packaged `zoo:digits-*` splits.

An `.npz` holds an array `x` (samples along axis 0, shaped like the model input) and optionally
`y` (integer class labels, one per sample). Calibration needs only `x`; accuracy needs both.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from quantloop.errors import QuantloopError
from quantloop.runtime.digits import DIGITS_DATA_SPECS, load_digits_split

ZOO_PREFIX = "zoo:"


def load_dataset(spec: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from `zoo:digits-calib|val|test` or the path of an `.npz` file."""
    text = str(spec)
    if text.startswith(ZOO_PREFIX):
        return _load_zoo(text)
    return _load_npz(Path(text))


def _load_zoo(spec: str) -> tuple[np.ndarray, np.ndarray]:
    if spec not in DIGITS_DATA_SPECS:
        raise QuantloopError(f"{spec}: unknown data set; known: {', '.join(DIGITS_DATA_SPECS)}")
    return load_digits_split(DIGITS_DATA_SPECS[spec])


#: The most bytes one array of a data file may claim (checked in its header before anything is allocated).
MAX_ARRAY_BYTES = 4 << 30


def _check_headers(path: Path) -> None:
    """Refuse, from the .npy headers alone, arrays that claim a huge shape, an object / structured dtype,
    or more data than the archive member holds (so loading can neither exhaust memory nor fail later)."""
    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = npy.read_array_header_2_0(member)
                name = info.filename.removesuffix(".npy")
                if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize == 0:
                    raise QuantloopError(f"{path}: array {name!r} has dtype {dtype}; expected numbers")
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > MAX_ARRAY_BYTES:
                    raise QuantloopError(f"{path}: array {name!r} claims shape {tuple(shape)} ({claimed} bytes), "
                                         f"more than a data file may hold ({MAX_ARRAY_BYTES} bytes)")
                if claimed > info.file_size:
                    raise QuantloopError(f"{path}: array {name!r} claims shape {tuple(shape)} but the file holds "
                                         f"only {info.file_size} bytes (truncated?)")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, TypeError) as err:
        raise QuantloopError(f"{path}: not a readable .npz file ({_first_line(err)})") from None


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise QuantloopError(f"{path}: no such data file")
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise QuantloopError(f"{path}: not an .npz archive (a single .npy array); save with numpy.savez(x=..., y=...)")
    if not zipfile.is_zipfile(path):
        raise QuantloopError(f"{path}: not an .npz file (not a zip archive); save with numpy.savez(x=..., y=...)")
    _check_headers(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise QuantloopError(f"{path}: not a readable .npz file ({_first_line(err)})") from err
    with data:
        if "x" not in data.files:
            found = ", ".join(data.files) or "none"
            raise QuantloopError(f"{path}: no array named 'x' (found: {found})")
        try:
            x = data["x"]
            y = data["y"] if "y" in data.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise QuantloopError(f"{path}: not a readable .npz file ({_first_line(err)})") from err
    return x, y


def check_dataset(
    x: np.ndarray,
    y: np.ndarray | None,
    input_shape: Sequence[int | str | None],
    input_dtype: np.dtype | type,
    num_classes: int | None,
    source: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check data against the model input; return x in the model's dtype and y as int64.

    `input_shape` includes the batch dimension; dims that are not ints are dynamic and match
    anything. A fixed batch dimension b needs a sample count divisible by b. Float data is cast
    to a float model input; integer data must have exactly the model's integer dtype.
    """
    x = np.asarray(x)
    want = np.dtype(input_dtype)
    shown = "x".join(str(d) if isinstance(d, int) else "?" for d in input_shape)
    if x.ndim != len(input_shape) or any(
        isinstance(d, int) and d != s for d, s in zip(input_shape[1:], x.shape[1:])
    ):
        raise QuantloopError(
            f"{source}: x has shape {'x'.join(map(str, x.shape))}, the model input needs {shown} "
            "(samples along the first axis)"
        )
    if len(x) == 0:
        raise QuantloopError(f"{source}: x holds no samples")
    batch = input_shape[0]
    if isinstance(batch, int) and batch > 0 and len(x) % batch:
        raise QuantloopError(f"{source}: {len(x)} samples are not a multiple of the model's fixed batch {batch}")
    if want.kind == "f" and x.dtype.kind == "f":
        x = x.astype(want, copy=False)
    elif x.dtype != want:
        raise QuantloopError(f"{source}: x has dtype {x.dtype}, the model input needs {want}")
    if y is None:
        return x, None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise QuantloopError(
            f"{source}: y has shape {'x'.join(map(str, y.shape))}, expected one label per sample ({len(x)})"
        )
    if y.dtype.kind not in "iu":
        raise QuantloopError(f"{source}: y has dtype {y.dtype}, expected integer class labels")
    low, high = int(y.min()), int(y.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        limit = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
        raise QuantloopError(f"{source}: labels range {low}..{high}, the model's classes are {limit}")
    return x, y.astype(np.int64)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
