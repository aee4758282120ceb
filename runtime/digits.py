"""scikit-learn's digits as a packaged, labelled data set with fixed splits (`zoo:digits-<split>`).

The 1797 8×8 images (grey levels 0..16) are split once, stratified by class and seeded, into
train / calib / val / test = 1100 / 200 / 200 / 297 images. `digits_splits.npz` ships the raw
uint8 images and their indices into `sklearn.datasets.load_digits()` (so disjointness is
checkable); `load_digits_split` scales them to [0, 1] and upsamples bilinearly to the model
resolution at load time. The models never see the 8×8 originals, so upsampling stays out of the
ONNX graphs.

The digits zoo models trained on it (`quantloop.frontend.zoo.digits`) take a float32 input of fixed
shape 1×1×`RESOLUTION`×`RESOLUTION` and return `NUM_CLASSES` logits.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from quantloop.errors import QuantloopError

SPLITS_FILE = Path(__file__).with_name("digits_splits.npz")
SPLIT_SIZES: dict[str, int] = {"train": 1100, "calib": 200, "val": 200, "test": 297}
SPLIT_SEED = 20240
NUM_CLASSES = 10
RESOLUTION = 32
MAX_GREY = 16

DIGITS_DATA_SPECS: dict[str, str] = {f"zoo:digits-{name}": name for name in ("train", "calib", "val", "test")}


def make_splits(seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Split `load_digits()` into stratified, disjoint train/calib/val/test index sets.

    Returns `idx_<split>`, `x_<split>` (uint8 N×8×8, 0..16) and `y_<split>` (uint8) arrays.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    remaining = np.arange(len(labels))
    out: dict[str, np.ndarray] = {}
    rng = np.random.RandomState(seed)
    for name in ("test", "val", "calib"):
        remaining, taken = train_test_split(
            remaining,
            test_size=SPLIT_SIZES[name],
            stratify=labels[remaining],
            random_state=rng.randint(2**31 - 1),
        )
        out[f"idx_{name}"] = np.sort(taken)
    out["idx_train"] = np.sort(remaining)
    for name in SPLIT_SIZES:
        idx = out[f"idx_{name}"]
        out[f"x_{name}"] = images[idx]
        out[f"y_{name}"] = labels[idx]
    return out


def write_splits(path: Path = SPLITS_FILE, seed: int = SPLIT_SEED) -> None:
    np.savez_compressed(path, **make_splits(seed))


@lru_cache(maxsize=1)
def _packaged_splits() -> dict[str, np.ndarray]:
    if not SPLITS_FILE.is_file():
        raise QuantloopError(
            f"{SPLITS_FILE}: packaged digits splits are missing; "
            "run `python -m quantloop.frontend.zoo.train_digits --splits-only`"
        )
    with np.load(SPLITS_FILE) as data:
        return {key: data[key] for key in data.files}


def split_indices(name: str) -> np.ndarray:
    """Indices into `sklearn.datasets.load_digits()` of the images in split `name`."""
    _check_split_name(name)
    return _packaged_splits()[f"idx_{name}"].copy()


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """dst×src interpolation matrix with half-pixel centres (torch's `align_corners=False`)."""
    centres = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    centres = np.clip(centres, 0.0, src - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, src - 1)
    frac = centres - low
    matrix = np.zeros((dst, src), dtype=np.float64)
    rows = np.arange(dst)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def upsample(images: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    """N×h×w grey images (0..16) -> float32 N×1×resolution×resolution in [0, 1], bilinear."""
    n, h, w = images.shape
    rows = bilinear_matrix(h, resolution)
    cols = bilinear_matrix(w, resolution)
    scaled = images.astype(np.float64) / MAX_GREY
    out = np.einsum("ih,nhw,jw->nij", rows, scaled, cols)
    return out.astype(np.float32)[:, None, :, :]


def load_digits_split(name: str, resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 N×1×resolution×resolution in [0, 1], y int64 N) of split train|calib|val|test."""
    _check_split_name(name)
    if not isinstance(resolution, int) or resolution < 1:
        raise QuantloopError(f"digits split {name}: resolution must be a positive integer, got {resolution!r}")
    splits = _packaged_splits()
    x = upsample(splits[f"x_{name}"], resolution)
    y = splits[f"y_{name}"].astype(np.int64)
    return x, y


def _check_split_name(name: str) -> None:
    if name not in SPLIT_SIZES:
        raise QuantloopError(f"digits split {name!r}: unknown; known: {', '.join(SPLIT_SIZES)}")
