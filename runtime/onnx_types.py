"""ONNX integer tensor types <-> qnn uniform element types, shared by import and export."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from xdsl.ir import Attribute

from quantloop.errors import QuantloopError
from quantloop.ir import UniformPerAxisType, UniformType

#: ONNX integer storage types that QuantizeLinear / DequantizeLinear use, as (bits, signed).
ONNX_STORAGE: dict[int, tuple[int, bool]] = {
    TensorProto.INT8: (8, True),
    TensorProto.UINT8: (8, False),
    TensorProto.INT16: (16, True),
    TensorProto.UINT16: (16, False),
    TensorProto.INT4: (4, True),
    TensorProto.UINT4: (4, False),
}
STORAGE_ONNX: dict[tuple[int, bool], int] = {v: k for k, v in ONNX_STORAGE.items()}



def uniform_type(
    bits: int, signed: bool, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, rank: int, what: str
) -> Attribute:
    """`!qnn.uniform` per tensor (scalar scale) or per axis (1-D scale along `axis`, ONNX's rule)."""
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros(scale.shape, np.int64) if zero_point is None else np.asarray(zero_point).astype(np.int64)
    try:
        if scale.size == 1 and scale.ndim <= 1 and zp.size == 1:
            return UniformType(bits, signed, float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]))
        if scale.ndim != 1 or zp.shape != scale.shape:
            raise QuantloopError(f"{what}: scale of shape {list(scale.shape)} and zero point of shape "
                                 f"{list(zp.shape)} are neither per tensor nor one 1-D per-axis vector")
        axis = axis + rank if axis < 0 else axis
        return UniformPerAxisType(bits, signed, axis, [float(s) for s in scale], [int(z) for z in zp])
    except Exception as err:  # VerifyException from an illegal scale or zero point
        if isinstance(err, QuantloopError):
            raise
        raise QuantloopError(f"{what}: {err}") from None
