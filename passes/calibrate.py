"""`qnn-calibrate`: turn chosen bit-widths (`!qnn.int`) into scales and zero points.

- Weights (constants read as the weight operand of conv2d / gemm / matmul) get one scale per output
  channel (conv: axis 0; gemm: axis 0 with trans_b, else 1; matmul: the last axis), symmetric, signed,
  narrow range (codes ±(2^(b-1) − 1)), by min-max or MSE-optimal clipping
  (:func:`quantloop.ir.quantization.weight_scales`). With `scheme=int` the type becomes
  `!qnn.uniform<i4:f32:0, {s0:0, ...}>`; with `pot` / `pot2` (targets with shift-add PEs) it becomes
  `!qnn.pot<bits = b>` / `!qnn.pot2<bits = b>`, and since those types carry no scale the per-channel scales
  are kept on the constant as the attributes `qnn.scales` (`array<f32: ...>`) and `qnn.axis`
  (read back with :func:`quantloop.ir.quantization.weight_quantization`). Either way the constant then
  holds its integer codes (int8 for b ≤ 8, int16 for 16 bits), as the ONNX importer stores QDQ weights.
- Activations (model inputs and op results typed `!qnn.int`) get a per-tensor
  `!qnn.uniform<u8:f32, s:0>` from ranges observed by running the model in onnxruntime on the
  calibration data: every activation becomes a graph output of the float export. Zero point 0
  (symmetric, so the accelerator needs no zero-point corrections); the signedness `qnn-assign-bits`
  chose is kept (unsigned after ReLU / ReLU6 and ops that keep values non-negative). Ops that only move
  values (maxpool, reshape, flatten, identity, dropout) whose result has the input's bit-width reuse the
  input's scale: their values are the input's, no requantization happens.
- Values that already carry a `!qnn.uniform` type (QDQ / QONNX models) keep it.

Options: `data` = an `.npz` with `x` (samples along axis 0) or `zoo:digits-calib`; empty uses
`samples` seeded N(0, 1) random inputs (and warns: such ranges say little about real data),
`weight_clip=mse|minmax`, `act_range=percentile|minmax`, `percentile=99.9` (defaults from
`quantloop.options`; two-sided: the
(100 − p)-th and p-th percentiles; tensors with more than 1 M observed values are subsampled at random,
seeded, the same share of every batch: `RangeObserver`), `scheme=int|pot|pot2`, `samples=32`, `seed=0`, `cache_dir=""`, `no_cache=false`, `max_samples=2048` (calibration
data beyond this many samples is not run: ranges settle long before, and time stays bounded;
`first_samples` is that rule, the search applies it too; `--max-calib-samples` sets it).

The observed ranges are cached on disk beside the mapper cache (same root, `calibration/` folder),
keyed by the exported float model (bytes, weights included), the calibration inputs, the activation
range settings, the onnxruntime version and `CACHE_VERSION`: a rerun on the same model and data
skips the onnxruntime runs (other bit-widths reuse these float ranges). The pass's whole result (the
ranges and every weight constant's per-channel scales) is cached too, keyed by the module as it stands
(ops, attributes, types, weight contents), the inputs and all options: a rerun with the same settings
skips the float export and the MSE clipping search as well, the rest of a warm calibration.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import TYPE_CHECKING
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, ModuleOp, TensorType, f32, i64
from xdsl.dialects.func import FuncOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from quantloop.errors import QuantloopError, onnxruntime_failures
from quantloop.ir.types import container
from quantloop.ir import quantization as q
from quantloop.ir.quantization import AXIS_ATTR, SCALES_ATTR, SCHEME_ATTR
from quantloop.ir.qnn import (
    ConstantOp,
    Conv2dOp,
    DenseWeightsAttr,
    GemmOp,
    IntType,
    Pot2Type,
    PotType,
    UniformPerAxisType,
    UniformType,
    main_func,
    op_label,
)
from quantloop.ir.ops import MOVES_VALUES, WEIGHT_OPERAND
from quantloop.runtime.ort_options import session_options
from quantloop.options import DEFAULT_ACT_RANGE, DEFAULT_MAX_CALIB_SAMPLES, DEFAULT_PERCENTILE, DEFAULT_WEIGHT_CLIP

PERCENTILE_SAMPLE_CAP = 1 << 20  # values kept per activation (4 MiB): every observer holds up to this many
#: bump whenever the observed ranges change for the same model, data and settings
CACHE_VERSION = 3

if TYPE_CHECKING:
    import onnx


class CalibrationWarning(UserWarning):
    """Calibration ran, but on inputs that may not represent the model's real data."""


def weight_axis(op: Operation) -> int:
    """The output-channel axis of the weight operand of a conv2d / gemm / matmul."""
    if isinstance(op, Conv2dOp):
        return 0
    if isinstance(op, GemmOp):
        return 0 if op.trans_b else 1
    return len(op.operands[1].type.get_shape()) - 1


# ----------------------------------------------------------------------------- observing ranges


class RangeObserver:
    """Running range of one activation: extremes, or (for percentiles) a uniform sample of its values.

    `updates`: how many batches it will see. Percentiles come from at most `PERCENTILE_SAMPLE_CAP`
    values: while everything fits, every value is kept (exact); beyond that each batch keeps the same
    seeded random share of its values (drawn with replacement), so every batch weighs the same and no
    batch's values are resampled again later."""

    def __init__(self, method: str, percentile: float, rng: np.random.Generator, updates: int = 1) -> None:
        self.method, self.percentile, self.rng = method, percentile, rng
        self.updates = max(1, updates)
        self.lo, self.hi = np.inf, -np.inf
        self.samples: list[np.ndarray] = []
        self.share: float | None = None  # fraction of each batch's values kept, set by the first batch

    def update(self, values: np.ndarray) -> None:
        flat = np.asarray(values, np.float32).ravel()
        if not flat.size:
            return
        lo, hi = float(flat.min()), float(flat.max())  # NaN propagates through min/max: one pass each
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise QuantloopError("qnn-calibrate: the model produced NaN or infinite activations on the calibration data")
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        if self.method != "percentile":
            return
        if self.share is None:
            self.share = min(1.0, PERCENTILE_SAMPLE_CAP / (flat.size * self.updates))
        if self.share < 1.0:
            flat = flat[self.rng.integers(0, flat.size, max(1, int(np.ceil(flat.size * self.share))))]
        self.samples.append(flat)

    def range(self) -> tuple[float, float]:
        if self.method == "minmax" or not self.samples:
            return self.lo, self.hi
        return q.tensor_range(np.concatenate(self.samples), "percentile", self.percentile)


def _batches(x: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), batch):
        yield x[start : start + batch]


def first_samples(x: np.ndarray, batch: int, max_samples: int) -> np.ndarray:
    """The calibration data actually run: the first `max_samples` samples of `x`, rounded down to whole
    batches of `batch` (at least one batch)."""
    return x[: max(batch, max_samples // batch * batch)]


@dataclass(frozen=True)
class CalibratePass(ModulePass):
    """Per-channel weight scales and activation ranges from onnxruntime runs: `!qnn.uniform` types."""

    name = "qnn-calibrate"

    data: str = ""
    weight_clip: str = DEFAULT_WEIGHT_CLIP
    act_range: str = DEFAULT_ACT_RANGE
    percentile: float = DEFAULT_PERCENTILE
    scheme: str = "int"
    samples: int = 32
    max_samples: int = DEFAULT_MAX_CALIB_SAMPLES
    seed: int = 0
    cache_dir: str = ""
    no_cache: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self._check_options()
        func = main_func(op)
        weights = self._weight_constants(func)
        activations = self._activations(func)
        measured = [v for v, shared in activations if shared is None]
        args = list(func.body.block.args)
        batch = max(1, args[0].type.get_shape()[0]) if args else 1
        inputs = self._inputs(func, batch) if measured else []
        # Cache hit on the module as it stands: ranges and weight scales without exporting anything.
        cache, key = self._result_cache(op, inputs, batch)
        entry = _valid_entry(cache.get(key) if cache is not None else None, len(measured), len(weights))
        if entry is not None:
            observed = {v: tuple(r) for v, r in zip(measured, entry["ranges"])}
            known = [np.asarray(s, np.float32) for s in entry["weight_scales"]]
        else:
            observed = self._observe(op, func, measured, inputs, batch)
            known = [None] * len(weights)
        scales = [
            self._calibrate_weights(constant, user, axis, cached)
            for (constant, (user, axis)), cached in zip(weights.items(), known)
        ]
        if cache is not None and entry is None:
            cache.put(key, {"ranges": [list(observed[v]) for v in measured],
                            "weight_scales": [s.tolist() for s in scales]})
        types: dict[SSAValue, Attribute] = {}
        for value, source in activations:
            if source is None:
                elem = value.type.element_type
                scale, zp = q.activation_params(*observed[value], elem.bits, elem.signed)
                types[value] = UniformType(elem.bits, elem.signed, scale, zp)
            else:
                types[value] = types.get(source, source.type.element_type)
        for value, elem in types.items():
            _retype(value, elem)
        func.update_function_type()

    def _check_options(self) -> None:
        choices = {"weight_clip": ("minmax", "mse"), "act_range": ("minmax", "percentile"), "scheme": ("int", "pot", "pot2")}
        for option, legal in choices.items():
            if getattr(self, option) not in legal:
                raise QuantloopError(
                    f"qnn-calibrate: {option}={getattr(self, option)!r} is not one of {', '.join(legal)}"
                )
        if not 50.0 < self.percentile <= 100.0:
            raise QuantloopError(f"qnn-calibrate: percentile={self.percentile} must be in (50, 100]")
        if self.samples < 1:
            raise QuantloopError(f"qnn-calibrate: samples={self.samples} must be at least 1")
        if self.max_samples < 1:
            raise QuantloopError(f"qnn-calibrate: max_samples={self.max_samples} must be at least 1")

    # ------------------------------------------------------------------ which values

    def _weight_constants(self, func: FuncOp) -> dict[ConstantOp, tuple[Operation, int]]:
        found: dict[ConstantOp, tuple[Operation, int]] = {}
        for o in func.body.walk():
            index = WEIGHT_OPERAND.get(type(o))
            if index is None:
                continue
            producer = o.operands[index].owner
            if isinstance(producer, ConstantOp) and isinstance(producer.output.type.element_type, IntType):
                found.setdefault(producer, (o, weight_axis(o)))
        for o in func.body.walk():
            if isinstance(o, ConstantOp) and isinstance(o.output.type.element_type, IntType) and o not in found:
                raise QuantloopError(
                    f"{op_label(o)}: a constant with a bit-width that is not the weight operand of a "
                    "conv2d / gemm / matmul; qnn-calibrate only calibrates weights"
                )
        return found

    @staticmethod
    def _activations(func: FuncOp) -> list[tuple[SSAValue, SSAValue | None]]:
        """Values typed `!qnn.int` in program order, each with the value whose type it shares (or None)."""
        values: list[tuple[SSAValue, SSAValue | None]] = []
        for arg in func.body.block.args:
            if isinstance(arg.type, TensorType) and isinstance(arg.type.element_type, IntType):
                values.append((arg, None))
        for o in func.body.walk():
            if isinstance(o, ConstantOp) or o.parent_op() is not func:
                continue
            for result in o.results:
                if not (isinstance(result.type, TensorType) and isinstance(result.type.element_type, IntType)):
                    continue
                source = o.operands[0] if isinstance(o, MOVES_VALUES) else None
                if source is not None and _same_storage(source.type.element_type, result.type.element_type):
                    values.append((result, source))
                else:
                    values.append((result, None))
        return values

    # ------------------------------------------------------------------ running the model

    def _inputs(self, func: FuncOp, batch: int) -> list[np.ndarray]:
        """Calibration inputs per model input, whole batches of the model's (static) batch size."""
        args = list(func.body.block.args)
        shapes = [tuple(a.type.get_shape()) for a in args]
        if not self.data:
            warnings.warn(
                f"qnn-calibrate: no calibration data given; activation ranges come from {self.samples} seeded "
                "N(0, 1) random inputs and may not match real data (pass data=calib.npz)",
                CalibrationWarning,
                stacklevel=2,
            )
            rng = np.random.default_rng(self.seed)
            count = -(-self.samples // batch) * batch
            return [rng.standard_normal((count, *s[1:])).astype(np.float32) for s in shapes]
        from quantloop.runtime.dataset import check_dataset, load_dataset

        if len(args) != 1:
            raise QuantloopError(
                f"{self.data}: the model has {len(args)} inputs; calibration data (.npz array x) feeds one input"
            )
        x, _ = load_dataset(self.data)
        x, _ = check_dataset(x, None, shapes[0], np.float32, None, self.data)
        if len(x) < batch:
            raise QuantloopError(f"{self.data}: {len(x)} samples are fewer than the model's batch {batch}")
        return [first_samples(x, batch, self.max_samples)]

    def _observe(
        self, module: ModuleOp, func: FuncOp, values: list[SSAValue], inputs: list[np.ndarray], batch: int
    ) -> dict[SSAValue, tuple[float, float]]:
        if not values:
            return {}
        import onnx
        import onnxruntime as ort

        from quantloop.runtime.fakequant_export import FakeQuantExporter

        args = list(func.body.block.args)
        # Values a quantized model carries quantized are fake-quantized (ranges as the model runs);
        # those still waiting for a scale run in float.
        with tempfile.TemporaryDirectory(prefix="quantloop-calibration-") as tmp:
            # The weights go straight from the module's arrays to a side file, never into the model's
            # protobuf: a VGG-sized model would otherwise hold its weights twice (half a gigabyte each)
            # at the compile's peak; onnxruntime reads them from the file, the cache key hashes it.
            path = Path(tmp) / "calibration.onnx"
            with open(path.with_name("calibration.weights"), "wb") as weights_file:
                exporter = FakeQuantExporter(module, uncalibrated_as_float=True, weights_file=weights_file,
                                             weights_location="calibration.weights")
                model = exporter.export("calibration")
            outputs = {o.name for o in model.graph.output}
            names = {v: exporter.names[v] for v in values if v not in args}
            for value, name in names.items():
                if name not in outputs:
                    outputs.add(name)
                    model.graph.output.append(
                        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(value.type.get_shape()))
                    )
            name_of = exporter.names
            fetch_names = [name_of[v] for v in values]
            feeds = [name_of[a] for a in args]
            _map_weights_from_file(func, exporter.names, model, path.with_name("calibration.weights"))
            del exporter
            onnx.save_model(model, path)
            del model
            cache, key = self._cache([path, path.with_name("calibration.weights")], inputs, fetch_names, batch)
            if cache is not None:
                cached = cache.get(key)
                if cached is not None and set(cached) == set(fetch_names):
                    return {v: tuple(cached[name_of[v]]) for v in values}
            # one run per batch of the model's (static, usually 1) batch size is too little work to spread
            # over threads: a second one, spinning while it waits, took 2-3x the CPU on a 2-core machine
            options = session_options(run_once=True)
            rng = np.random.default_rng(self.seed)
            updates = len(inputs[0]) // batch if inputs else 1
            observers = {v: RangeObserver(self.act_range, self.percentile, rng, updates) for v in values}
            fetch = list(names.values())
            with onnxruntime_failures("qnn-calibrate"):
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for parts in zip(*(_batches(x, batch) for x in inputs)):
                    for arg, part in zip(args, parts):
                        if arg in observers:
                            observers[arg].update(part)
                    for value, result in zip(names, session.run(fetch, dict(zip(feeds, parts)))):
                        observers[value].update(result)
                del session
        ranges = {v: tuple(float(x) for x in obs.range()) for v, obs in observers.items()}
        if cache is not None:
            cache.put(key, {name_of[v]: list(r) for v, r in ranges.items()})
        return ranges

    def _result_cache(self, module: ModuleOp, inputs: list[np.ndarray], batch: int):
        """The calibration cache and the key of this pass's whole result (None, "" with `no_cache`):
        the module as it stands (every op, attribute, type and weight), the calibration inputs and every
        option that affects ranges or weight scales. A hit skips the float export and the MSE clipping."""
        if self.no_cache:
            return None, ""
        import onnxruntime

        from quantloop.mapper.cache import MapCache, cache_key
        from quantloop.passes.search.accuracy_cache import array_digest

        key = cache_key({
            "module": _module_digest(module),
            "inputs": [array_digest(x) for x in inputs],
            "batch": batch,
            "act_range": self.act_range,
            "percentile": self.percentile if self.act_range == "percentile" else None,
            "seed": self.seed,
            "weight_clip": self.weight_clip,
            "scheme": self.scheme,
            "onnxruntime": onnxruntime.__version__,
            "version": CACHE_VERSION,
        })
        return MapCache(self.cache_dir or None, folder="calibration"), key

    def _cache(self, files: list[Path], inputs: list[np.ndarray], fetch: list[str], batch: int):
        """The calibration cache and this run's key (None, "" with `no_cache`); `files` hold the
        calibration model (graph and weights)."""
        if self.no_cache:
            return None, ""
        import onnxruntime

        from quantloop.mapper.cache import MapCache, cache_key
        from quantloop.passes.search.accuracy_cache import array_digest

        key = cache_key({
            "model": [_file_digest(f) for f in files],
            "inputs": [array_digest(x) for x in inputs],
            "fetch": fetch,
            "batch": batch,
            "act_range": self.act_range,
            "percentile": self.percentile if self.act_range == "percentile" else None,
            "seed": self.seed,
            "onnxruntime": onnxruntime.__version__,
            "version": CACHE_VERSION,
        })
        return MapCache(self.cache_dir or None, folder="calibration"), key

    # ------------------------------------------------------------------ rewriting

    def _calibrate_weights(
        self, constant: ConstantOp, user: Operation, axis: int, cached: np.ndarray | None = None
    ) -> np.ndarray:
        """Quantize one weight constant; `cached` scales (from an earlier identical run) skip the
        clipping search. Returns the per-channel scales used."""
        elem = constant.output.type.element_type
        if not elem.signed:
            raise QuantloopError(f"{op_label(constant)}: weights typed unsigned {elem}; qnn-calibrate quantizes weights signed")
        chosen = constant.attributes.pop(SCHEME_ATTR, None)  # a bits file's per-layer scheme wins
        bits, scheme = elem.bits, (self.scheme if chosen is None else chosen.data)
        legal = {"int": q.UNIFORM_BITS, "pot": q.POT_BITS, "pot2": q.POT2_BITS}[scheme]
        if bits not in legal:
            raise QuantloopError(
                f"{op_label(user)}: {bits}-bit weights cannot use scheme {scheme} "
                f"(legal widths {min(legal)}..{max(legal)})"
            )
        array = np.asarray(constant.array, np.float32)
        scales = q.weight_scales(array, bits, self.weight_clip, scheme, axis=axis) if cached is None else cached
        codes = np.empty(array.shape, container(bits, True))
        # a block of channels at a time: the encoding's float temporaries of a VGG fc layer would set the peak
        channels, out = np.moveaxis(array, axis, 0), np.moveaxis(codes, axis, 0)
        step = max(1, q.CHUNK_BYTES // max(1, channels[0].nbytes if len(channels) else 1))
        for start in range(0, len(channels), step):
            block = slice(start, start + step)
            out[block] = q.weight_encode(channels[block], scales[block], bits, scheme, axis=0)
        if scheme == "int":
            new_elem: Attribute = UniformPerAxisType(bits, True, axis, [float(s) for s in scales], [0] * scales.size)
        else:
            new_elem = PotType(bits) if scheme == "pot" else Pot2Type(bits)
            constant.attributes[SCALES_ATTR] = DenseArrayBase.from_list(f32, [float(s) for s in scales])
            constant.attributes[AXIS_ATTR] = IntegerAttr(axis, i64)
        constant.properties["value"] = DenseWeightsAttr(codes)
        _retype(constant.output, new_elem)
        return scales


def _module_digest(module: ModuleOp) -> str:
    """sha256 of everything in `module`: per op (in order) its name, operands (by number), result types
    and name hints, attributes and properties, with weight arrays hashed by content."""
    import hashlib

    from quantloop.passes.search.accuracy_cache import array_digest

    digest = hashlib.sha256()
    number: dict[SSAValue, int] = {}

    def values(vals) -> str:
        out = []
        for v in vals:
            number.setdefault(v, len(number))
            out.append(f"%{number[v]}:{v.name_hint}:{v.type}")
        return ",".join(out)

    def attrs(items) -> str:
        return ";".join(
            f"{k}={array_digest(a.array) if isinstance(a, DenseWeightsAttr) else a}" for k, a in sorted(items)
        )

    for o in module.walk():
        line = [o.name, ",".join(str(number.get(v, "?")) for v in o.operands), values(o.results),
                attrs(o.properties.items()), attrs(o.attributes.items())]
        for region in o.regions:
            for block in region.blocks:
                line.append("^" + values(block.args))
        digest.update("|".join(line).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _map_weights_from_file(func: FuncOp, names: dict[SSAValue, str], model: onnx.ModelProto, weights: Path) -> None:
    """Swap the float32 arrays of the weights still to be calibrated for read-only maps of the same bytes
    in the external-data file just written: the process then does not hold a private copy of them while
    onnxruntime loads its own (VGG-16: half a gigabyte less at the compile's peak)."""
    import onnx

    placed = {
        t.name: {e.key: e.value for e in t.external_data}
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
    }
    for o in func.body.walk():
        if not (isinstance(o, ConstantOp) and isinstance(o.output.type.element_type, IntType)):
            continue
        where = placed.get(names.get(o.output, ""))
        array = o.array
        if where is None or array is None or array.dtype != np.float32 or int(where["length"]) != array.nbytes:
            continue
        mapped = np.memmap(weights, dtype="<f4", mode="r", offset=int(where["offset"]), shape=array.shape)
        o.properties["value"] = DenseWeightsAttr(mapped)


def _valid_entry(entry: dict | None, ranges: int, weights: int) -> dict | None:
    """A cached result of the expected shape (anything else is treated as a miss)."""
    if not isinstance(entry, dict):
        return None
    got_ranges, got_scales = entry.get("ranges"), entry.get("weight_scales")
    if not (isinstance(got_ranges, list) and isinstance(got_scales, list)):
        return None
    if len(got_ranges) != ranges or len(got_scales) != weights:
        return None
    if not all(isinstance(r, list) and len(r) == 2 for r in got_ranges):
        return None
    return entry


def _file_digest(path: Path) -> str | None:
    """sha256 of a file read in 1 MiB chunks (None when it does not exist: a model without big tensors)."""
    import hashlib

    if not path.exists():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _same_storage(a: Attribute, b: Attribute) -> bool:
    bits = lambda t: (t.bits, t.signed) if isinstance(t, (IntType, UniformType)) else None  # noqa: E731
    return bits(a) is not None and bits(a) == bits(b)


def _retype(value: SSAValue, elem: Attribute) -> SSAValue:
    name = value.name_hint
    new = Rewriter.replace_value_with_new_type(value, TensorType(elem, value.type.get_shape()))
    new.name_hint = name
    return new
