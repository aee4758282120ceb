"""accel-map: every accel.layer gets a mapping and a cost that the cost model reproduces."""

from __future__ import annotations

import io

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32

from quantloop.costmodel.model import evaluate
from quantloop.errors import QuantloopError
from quantloop.ir.accel import TARGET_ATTR, TargetAttr, TargetRef, layers
from quantloop.ir.qnn import AddOp, ConstantOp, Conv2dOp, FlattenOp, GemmOp, GlobalAvgPoolOp, make_context, parse_module
from quantloop.passes.accel_lower import AccelLowerPass
from quantloop.passes.accel_map import AccelMapPass
from quantloop.passes.assign_bits import AssignBitsPass
from quantloop.passes.pipeline import dump_header, run_pipeline
from quantloop.targets.registry import load_target


def tiny_model() -> ModuleOp:
    """conv 3x3 → depthwise 3x3 stride 2 → pointwise, twice the same pointwise (shared mapping) → add →
    global pool → flatten → gemm. Small so that mapping it is quick."""
    rng = np.random.default_rng(1)
    fn = func.FuncOp("main", ([TensorType(f32, [1, 4, 8, 8])], [TensorType(f32, [1, 10])]))
    (x,) = fn.body.block.args
    ops = []

    def add(op):
        ops.append(op)
        return op

    def const(shape, name):
        return add(ConstantOp(rng.standard_normal(shape).astype(np.float32), name=name))

    c1 = add(Conv2dOp(x, const((8, 4, 3, 3), "w1"), None, pads=(1, 1, 1, 1), act="relu", name="conv1"))
    dw = add(Conv2dOp(c1, const((8, 1, 3, 3), "w2"), None, strides=(2, 2), pads=(1, 1, 1, 1), group=8, act="relu", name="dw2"))
    pa = add(Conv2dOp(dw, const((16, 8, 1, 1), "w3"), None, act="relu", name="pw3a"))
    pb = add(Conv2dOp(dw, const((16, 8, 1, 1), "w4"), None, act="relu", name="pw3b"))
    s = add(AddOp(pa, pb, name="add4"))
    g = add(GlobalAvgPoolOp(s, name="gap5"))
    f = add(FlattenOp(g, 1, name="flat6"))
    fc = add(GemmOp(f, const((10, 16), "w7"), None, trans_b=True, name="fc7"))
    add(func.ReturnOp(fc))
    fn.body.block.add_ops(ops)
    return ModuleOp([fn])


def _lowered(target="eyeriss", bits="w8a8") -> ModuleOp:
    module = tiny_model()
    ctx = make_context()
    AssignBitsPass(bits=bits).apply(ctx, module)
    AccelLowerPass(target=target).apply(ctx, module)
    return module


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """One cache for the module: later tests hit what the first one mapped."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def mapped_eyeriss(cache_dir):
    module = _lowered("eyeriss", "w4a8")
    AccelMapPass(cache_dir=cache_dir).apply(make_context(), module)
    module.verify()
    return module


def test_every_layer_is_mapped_and_the_cost_re_evaluates_identically(mapped_eyeriss):
    arch = load_target("eyeriss")
    assert len(layers(mapped_eyeriss)) == 5
    for layer in layers(mapped_eyeriss):
        assert layer.mapping is not None and layer.cost is not None, layer.label
        problem, bits = layer.problem.to_costmodel(layer.label), layer.bits.to_costmodel()
        again = evaluate(arch, problem, layer.mapping.to_costmodel(), bits, check=True)
        cost = layer.cost.data
        assert again.total_energy_pj == cost.energy_pj
        assert (again.cycles, again.macs) == (cost.cycles, cost.macs)
        assert again.utilization == cost.utilization
        assert again.mac_energy_pj == cost.mac_energy_pj
        assert [(s.level, s.dataspace, s.energy_pj, s.utilized_capacity_bits) for s in again.per_level] == [
            (c.level, c.dataspace, c.energy_pj, c.capacity_bits) for c in cost.per_level
        ]
        assert cost.mappings_considered >= 1
        assert [lvl.level for lvl in layer.mapping.levels] == [lvl.name for lvl in arch.levels]


def test_identical_layers_share_one_mapping(mapped_eyeriss):
    by_name = {layer.label: layer for layer in layers(mapped_eyeriss)}
    assert by_name["pw3a"].mapping == by_name["pw3b"].mapping
    assert by_name["pw3a"].cost == by_name["pw3b"].cost


def test_distinct_layers_go_to_the_mapper_once(monkeypatch, cache_dir):
    import quantloop.mapper as mapper

    seen = []
    real = mapper.map_layers

    def spy(requests, *args, **kwargs):
        seen.extend(name for name, _, _ in requests)
        return real(requests, *args, **kwargs)

    monkeypatch.setattr(mapper, "map_layers", spy)
    module = _lowered("eyeriss", "w4a8")
    AccelMapPass(cache_dir=cache_dir).apply(make_context(), module)
    assert sorted(seen) == ["conv1", "dw2", "fc7", "pw3a"]


def test_mapped_module_dumps_and_parses_back(tmp_path, cache_dir, mapped_eyeriss):
    module = tiny_model()
    out = io.StringIO()
    spec = f'qnn-assign-bits{{bits=w4a8}},accel-lower{{target=eyeriss}},accel-map{{cache_dir="{cache_dir}"}}'
    run_pipeline(module, spec, make_context(), print_ir_after_all=True, out=out, dump_dir=tmp_path / "ir")
    text = out.getvalue()
    for name in ("qnn-assign-bits", "accel-lower", "accel-map"):
        assert dump_header(name) in text
    after_map = text.split(dump_header("accel-map"))[1]
    assert "#accel.mapping<DRAM:" in after_map and "#accel.cost<energy_pj = " in after_map
    reparsed = parse_module((tmp_path / "ir" / "03_accel-map.mlir").read_text())
    assert [(lyr.mapping, lyr.cost) for lyr in layers(reparsed)] == [(lyr.mapping, lyr.cost) for lyr in layers(module)]
    assert [lyr.mapping for lyr in layers(module)] == [lyr.mapping for lyr in layers(mapped_eyeriss)]


@pytest.mark.slow
def test_simba_edp_with_two_workers_matches_one_worker(tmp_path):
    arch = load_target("simba")
    mapped = []
    for workers in (1, 2):
        module = _lowered("simba", "w8a8")
        AccelMapPass(objective="edp", workers=workers, no_cache=True).apply(make_context(), module)
        module.verify()
        mapped.append([(lyr.mapping, lyr.cost) for lyr in layers(module)])
    assert mapped[0] == mapped[1]
    for layer in layers(module):
        again = evaluate(arch, layer.problem.to_costmodel(), layer.mapping.to_costmodel(), layer.bits.to_costmodel())
        assert (again.total_energy_pj, again.cycles) == (layer.cost.data.energy_pj, layer.cost.data.cycles)


def test_map_needs_a_lowered_module():
    module = tiny_model()
    AssignBitsPass().apply(make_context(), module)
    with pytest.raises(QuantloopError, match="run accel-lower"):
        AccelMapPass(no_cache=True).apply(make_context(), module)


def test_a_target_changed_since_lowering_is_an_error():
    module = _lowered()
    module.attributes[TARGET_ATTR] = TargetAttr(TargetRef("eyeriss", "0" * 64))
    with pytest.raises(QuantloopError, match="changed since accel-lower"):
        AccelMapPass(no_cache=True).apply(make_context(), module)


def test_unknown_objective_is_an_error():
    with pytest.raises(QuantloopError, match="objective 'speed'"):
        AccelMapPass(objective="speed", no_cache=True).apply(make_context(), _lowered())
