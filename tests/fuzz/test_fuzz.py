"""Fuzz every kind of file quantloop reads: mutated ONNX protobufs, MLIR text, target / problem / mapping YAML,
bits JSON and npz headers. Each input must give exit 0 with a valid result or exit 2 with a short message
naming the file (see fuzz_harness). The budget is bounded (derandomized `ci` profile); explore further with
`HYPOTHESIS_PROFILE=dev python -m pytest -q -m fuzz tests/fuzz`.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from fuzz_harness import check, finite_json, finite_numbers

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]

SEEDS = Path(__file__).parent / "seeds"
TARGET_YAML = (SEEDS / "target.yaml").read_text()  # eyeriss with its template parameters resolved
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)

HOSTILE = [0, -1, 1, 3, 2**31, 2**63, 2**64 + 1, 10**30, 16.7, 1e308, float("nan"), float("inf"), -float("inf"),
           "abc", "", "x" * 300, None, True, [], {}, [1, 2], {"a": 1}, "BOGUS", "\x00"]


# ------------------------------------------------------------------------------------------ shared workdir


@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory(prefix="quantloop-fuzz-") as folder:
        yield Path(folder)


def _fresh(work: Path, name: str) -> Path:
    """A per-example folder (hypothesis reuses the module fixture across examples)."""
    folder = Path(tempfile.mkdtemp(dir=work, prefix=name))
    return folder


# ------------------------------------------------------------------------------------------ tree mutations


def _paths(tree: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, prefix + (i,))
    return out


def _set(tree: object, path: tuple, value: object) -> object:
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def _delete(tree: object, path: tuple) -> object:
    if not path:
        return tree
    node = tree
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return tree


@st.composite
def mutated_tree(draw, seed: object, hostile=HOSTILE) -> object:
    tree = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "nest"]))
        try:
            if op == "replace":
                tree = _set(tree, path, draw(st.sampled_from(hostile) | st.integers(-(2**70), 2**70)))
            elif op == "delete":
                tree = _delete(tree, path)
            else:
                value = tree
                for key in path:
                    value = value[key]
                tree = _set(tree, path, [value])
        except (KeyError, IndexError, TypeError):
            pass
    return tree


@st.composite
def mutated_text(draw, text: str) -> bytes:
    """Text-level damage on top of a tree mutation: duplicate a line, cut, or splice bytes (incl. non-UTF-8)."""
    data = text.encode()
    op = draw(st.sampled_from(["none", "none", "duplicate-line", "cut", "splice", "deep"]))
    if op == "duplicate-line":
        lines = data.splitlines(keepends=True)
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        data = b"".join(lines[: i + 1] + lines[i:])
    elif op == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif op == "splice":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\xff\xfe", b"\x00", b": :", b"{", b"[", b"- ", b"&a *a", b"!!python/object:os.system"])) + data[i:]
    elif op == "deep":
        data += b"\nextra: " + b"[" * 5000 + b"]" * 5000 + b"\n"
    return data


def _dump_yaml(tree: object) -> str:
    try:
        return yaml.safe_dump(tree, sort_keys=False, allow_unicode=False)
    except (yaml.YAMLError, ValueError):
        return "null\n"


# ------------------------------------------------------------------------------------------ YAML inputs


def _cost_ok(result) -> None:
    data = finite_json(result.out)
    assert finite_numbers(data) and data["macs"] > 0 and data["total_energy_pj"] >= 0


@given(st.data())
@settings(FUZZ, max_examples=45)
def test_fuzz_target_yaml(work, data):
    seed = yaml.safe_load(TARGET_YAML)
    folder = _fresh(work, "target")
    path = folder / "fuzz_target.yaml"
    path.write_bytes(data.draw(mutated_text(_dump_yaml(data.draw(mutated_tree(seed))))))
    check("target", ["cost", "--target", str(path), "--problem", str(SEEDS / "problem.yaml"),
                     "--mapping", str(SEEDS / "map.yaml"), "--json"], path, valid=_cost_ok)


def _fuzz_cost_input(work, data, kind: str, seed_file: str) -> None:
    """`quantloop cost` on eyeriss with one of its two YAML inputs (`kind`: problem or mapping) mutated
    from its seed file and the other one the valid seed."""
    inputs = {"problem": SEEDS / "problem.yaml", "mapping": SEEDS / "map.yaml"}
    path = _fresh(work, kind) / f"fuzz_{seed_file}"
    seed = yaml.safe_load((SEEDS / seed_file).read_text())
    path.write_bytes(data.draw(mutated_text(_dump_yaml(data.draw(mutated_tree(seed))))))
    inputs[kind] = path
    check(kind, ["cost", "--target", "eyeriss", "--problem", str(inputs["problem"]), "--mapping",
                 str(inputs["mapping"]), "--json"], path, valid=_cost_ok)


@given(st.data())
@settings(FUZZ, max_examples=40)
def test_fuzz_problem_yaml(work, data):
    _fuzz_cost_input(work, data, "problem", "problem.yaml")


@given(st.data())
@settings(FUZZ, max_examples=40)
def test_fuzz_mapping_yaml(work, data):
    _fuzz_cost_input(work, data, "mapping", "map.yaml")


# ------------------------------------------------------------------------------------------ ONNX models


def tiny_model() -> onnx.ModelProto:
    """Conv(3→4, 3×3, pad 1) → Relu → Conv(4→2, 1×1) on a 1×3×8×8 input."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _compile_ok(out_dir: Path):
    def valid(result) -> None:
        report = json.loads((out_dir / "report.json").read_text())
        assert finite_numbers(report)
    return valid


def _compile(model: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["compile", str(model), "--target", "eyeriss", "-o", str(out_dir), "--emit", "report",
            "--cache-dir", str(out_dir.parent / "cache"), "-q", *extra]


@st.composite
def mutated_onnx(draw) -> bytes:
    model = tiny_model()
    graph = model.graph
    op = draw(st.sampled_from(["attr", "attr", "dims", "dtype", "drop-node", "drop-init", "op-type", "opset",
                               "rename-input", "bytes", "long-name", "output"]))
    if op == "attr":
        node = graph.node[draw(st.sampled_from([0, 2]))]
        attr = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        value = draw(st.sampled_from([[0, 0, 0, 0], [-5, 1, 1, 1], [10**9] * 4, [2**62] * 4, [1], [3, 3, 3]]))
        attr.ints[:] = value[: max(1, len(value))]
        if draw(st.booleans()):
            node.attribute.append(helper.make_attribute("auto_pad", draw(st.sampled_from(["BOGUS", "SAME_UPPER"]))))
        if draw(st.booleans()):
            node.attribute.append(helper.make_attribute("strides", draw(st.sampled_from([[100, 100], [0, 1], [2, 2]]))))
    elif op == "dims":
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[draw(st.integers(0, 3))].dim_value = draw(st.sampled_from([0, 1, 2, 100000, 2**40]))
    elif op == "dtype":
        init = graph.initializer[draw(st.integers(0, 2))]
        init.data_type = draw(st.sampled_from([TensorProto.INT8, TensorProto.DOUBLE, TensorProto.STRING, 0, 999]))
    elif op == "drop-node":
        del graph.node[draw(st.integers(0, 2))]
    elif op == "drop-init":
        del graph.initializer[draw(st.integers(0, 2))]
    elif op == "op-type":
        graph.node[draw(st.integers(0, 2))].op_type = draw(st.sampled_from(["Clip", "Foo", "Add", "Gemm", ""]))
    elif op == "opset":
        model.opset_import[0].version = draw(st.sampled_from([1, 7, 13, 21, 99]))
    elif op == "rename-input":
        graph.node[2].input[0] = draw(st.sampled_from(["missing", "x", "y", ""]))
    elif op == "long-name":
        graph.node[draw(st.integers(0, 2))].name = draw(st.sampled_from(["n" * 300, "../../etc/passwd", "a/b", "é" * 200]))
    elif op == "output":
        del graph.output[:]
    data = model.SerializeToString()
    if op == "bytes":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:] if draw(st.booleans()) else data[:i]
    return data


@given(st.data())
@settings(FUZZ, max_examples=30)
def test_fuzz_onnx(work, data):
    folder = _fresh(work, "onnx")
    path = folder / "fuzz_model.onnx"
    path.write_bytes(data.draw(mutated_onnx()))
    out_dir = folder / "out"
    check("onnx", _compile(path, out_dir), path, out_dir, valid=_compile_ok(out_dir))


def _with_tiny_model(work, kind: str) -> tuple[Path, Path]:
    """A fresh folder for `kind` holding the tiny model the bits and npz fuzzers compile."""
    folder = _fresh(work, kind)
    model = folder / "model.onnx"
    onnx.save(tiny_model(), model)
    return folder, model


# ------------------------------------------------------------------------------------------ bits JSON


@given(st.data())
@settings(FUZZ, max_examples=15)
def test_fuzz_bits_json(work, data):
    folder, model = _with_tiny_model(work, "bits")
    seed = {"conv1": {"weights": 4, "activations": 8}, "conv2": {"weights": 8, "activations": 8}}
    tree = data.draw(mutated_tree(seed, hostile=HOSTILE + [2, 3, 4, 5, 6, 7, 8, 16, "int", "pot"]))
    try:
        text = json.dumps(tree)
    except ValueError:
        text = "{}"
    path = folder / "fuzz_bits.json"
    path.write_bytes(data.draw(mutated_text(text)))
    out_dir = folder / "out"
    check("bits", _compile(model, out_dir, "--bits-file", str(path)), path, out_dir, valid=_compile_ok(out_dir))


# ------------------------------------------------------------------------------------------ npz calibration data


def _npz_with_header(shape_text: str, descr: str, payload: bytes) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1") + payload
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", npy)
    return buf.getvalue()


@given(st.data())
@settings(FUZZ, max_examples=15)
def test_fuzz_npz_header(work, data):
    folder, model = _with_tiny_model(work, "npz")
    shape = data.draw(st.sampled_from(["(4, 3, 8, 8)", "(100000, 100000, 3, 3)", "(2**40,)", "(-1, 3, 8, 8)",
                                       "(4, 3, 8)", "()", "(0, 3, 8, 8)", "(4, 3, 8, 8, 1)", "'abc'"]))
    descr = data.draw(st.sampled_from(["<f4", "<f8", "|u1", "<i8", "|O", "V0", "<c8", "xyz"]))
    payload = np.random.default_rng(0).normal(size=4 * 3 * 8 * 8).astype(np.float32).tobytes()
    payload = payload[: data.draw(st.sampled_from([len(payload), len(payload) // 2, 0]))]
    path = folder / "fuzz_data.npz"
    path.write_bytes(_npz_with_header(shape, descr, payload))
    out_dir = folder / "out"
    check("npz", _compile(model, out_dir, "--data", str(path)), path, out_dir, valid=_compile_ok(out_dir))


# ------------------------------------------------------------------------------------------ MLIR text


def _seed_mlir() -> str:
    from xdsl.dialects.builtin import TensorType, f32

    from quantloop.ir.qnn import ConstantOp, Conv2dOp, MainBuilder, ReluOp, print_module

    b = MainBuilder([TensorType(f32, [1, 3, 6, 6])])
    w = b.add(ConstantOp(np.linspace(-1, 1, 4 * 27, dtype=np.float32).reshape(4, 3, 3, 3), name="conv1.weight"))
    conv = b.add(Conv2dOp(b.args[0], w, pads=(1, 1, 1, 1), name="conv1"))
    relu = b.add(ReluOp(conv, name="relu1"))
    return print_module(b.finish([relu]), elide_weights_over=None)


MLIR_TOKENS = ['"\\q' + "a" * 40 + '"', '"\\1' + "b" * 40 + '"', '"' + "\\" * 41, "{", "}", "(", ")", "<", ">",
               "9" * 5000, "-" + "9" * 50, "tensor<99999999999x3xf32>", "(" * 3000, "[" * 3000, "!qnn.int<bits = 99>",
               "#qnn.bits<W = 1>", "\x00", "\udcff", "%0", "^bb0:", '"qnn.foo"() : () -> ()', "0x" + "f" * 40]


@st.composite
def mutated_mlir(draw, text: str) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "insert", "cut", "number"]))
        if op == "insert":
            text = text[:i] + draw(st.sampled_from(MLIR_TOKENS)) + text[i:]
        elif op == "cut":
            text = text[:i] + text[i + draw(st.integers(1, 40)):]
        else:
            digits = [j for j, c in enumerate(text) if c.isdigit()]
            if digits:
                j = digits[draw(st.integers(0, len(digits) - 1))]
                text = text[:j] + draw(st.sampled_from(["0", "-1", "4294967296", "1" * 30, "1" * 5000])) + text[j + 1:]
    return text.encode("utf-8", "surrogateescape")


@given(st.data())
@settings(FUZZ, max_examples=50)
def test_fuzz_mlir(work, data):
    folder = _fresh(work, "mlir")
    path = folder / "fuzz_ir.mlir"
    path.write_bytes(data.draw(mutated_mlir(_SEED_MLIR)))
    check("mlir", ["opt", str(path), "-p", "qnn-assign-bits{bits=w4a8}"], path)


_SEED_MLIR = _seed_mlir()
