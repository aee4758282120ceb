"""Where a mixed-precision point's saving against uniform w8a8 comes from: the synergy decomposition.

Four network states, each a sum over the layers (EDP = network energy × network cycles, the layers
running one after another):

  w8a8      every layer at w8a8 with its best w8a8 mapping (the reference);
  mac       the w8a8 state with each layer's MAC energy at its new bits (access counts unchanged);
  kept      the new bits (packing and MAC energy) with every layer's w8a8 mapping kept;
  remapped  every layer re-mapped at its new bits, the kept w8a8 mapping handed to the mapper as a
            warm start, so a mapper miss can never show up as negative synergy in the objective.

The parts `mac_energy` (w8a8 → mac), `packing` (mac → kept) and `remapping` (kept → remapped) are
savings as fractions of the w8a8 value; they telescope, so they add up to `total` (w8a8 → remapped)
exactly. Beside them, `noise_floor`: the same bits mapped with the next mapper seed (no warm start)
against the search's seed, |difference| / w8a8 value; a re-mapping part below it is not a finding.
`traffic`: per storage level, the words moved (reads + fills + updates over the utilized
instances, summed over the layers) at w8a8, kept and re-mapped, and the compulsory minimum: every
tensor the level keeps moved once, packed at the new bits. Where kept traffic is already at that
minimum, re-mapping cannot cut it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quantloop.mapping import Mapping
from quantloop.costmodel.model import CostResult, evaluate
from quantloop.problem import DATASPACES, Bits, Problem, values_per_word
from quantloop.targets.arch import Arch

METRICS = ("energy_pj", "cycles", "edp")
STATES = ("w8a8", "mac", "kept", "remapped")
PARTS = {"mac_energy": ("w8a8", "mac"), "packing": ("mac", "kept"), "remapping": ("kept", "remapped")}


@dataclass(frozen=True)
class LayerInput:
    """One layer: its problem, its w8a8 mapping (the reference) and its new bits."""

    name: str
    problem: Problem
    w8a8_mapping: Mapping
    bits: Bits


def _totals(costs: Sequence[CostResult]) -> dict[str, float]:
    energy = float(sum(c.total_energy_pj for c in costs))
    cycles = float(sum(int(c.cycles) for c in costs))
    return {"energy_pj": energy, "cycles": cycles, "edp": energy * cycles}


def _words_moved(costs: Sequence[CostResult]) -> dict[str, float]:
    moved: dict[str, float] = {}
    for cost in costs:
        for s in cost.per_level:
            words = (s.reads_per_instance + s.fills_per_instance + s.updates_per_instance) * s.utilized_instances
            moved[s.level] = moved.get(s.level, 0.0) + float(words)
    return moved


def _compulsory(arch: Arch, layers: Sequence[LayerInput], costs: Sequence[CostResult]) -> dict[str, float]:
    """Per level: every tensor the level keeps (under the re-mapped mapping) moved once, packed."""
    words: dict[str, float] = {lvl.name: 0.0 for lvl in arch.levels}
    for layer, cost in zip(layers, costs):
        sizes = layer.problem.tensor_sizes
        for s in cost.per_level:
            if s.dataspace in DATASPACES:
                vpw = values_per_word(word_bits=s.word_bits, bits=layer.bits.of(s.dataspace))
                words[s.level] += -(-sizes[s.dataspace] // vpw)
    return words


def decompose(arch: Arch, layers: Sequence[LayerInput], objective: str, *, seed: int = 0, cache=None,
              map_one=None) -> dict:
    """The decomposition (see the module docstring) as a JSON-ready dict.

    `map_one(problem, bits, seed, warm_start)` maps one layer (default: `mapper.map_layer` on `arch`
    with `objective` and `cache`)."""
    if map_one is None:
        from quantloop.mapper import map_layer

        def map_one(problem, bits, seed, warm_start):
            return map_layer(problem, arch, bits, objective, cache=cache, seed=seed, warm_start=warm_start)

    w8a8 = [evaluate(arch, l.problem, l.w8a8_mapping, _w8a8_like(l.bits), check=False) for l in layers]
    kept = [evaluate(arch, l.problem, l.w8a8_mapping, l.bits, check=True) for l in layers]
    remapped = [map_one(l.problem, l.bits, seed, l.w8a8_mapping).cost for l in layers]
    plain = [map_one(l.problem, l.bits, seed, None).cost for l in layers]
    other_seed = [map_one(l.problem, l.bits, seed + 1, None).cost for l in layers]

    states = {"w8a8": _totals(w8a8), "kept": _totals(kept), "remapped": _totals(remapped)}
    mac_delta = sum(k.mac_energy_pj - r.mac_energy_pj for k, r in zip(kept, w8a8))
    mac_energy = states["w8a8"]["energy_pj"] + mac_delta
    states["mac"] = {"energy_pj": mac_energy, "cycles": states["w8a8"]["cycles"],
                     "edp": mac_energy * states["w8a8"]["cycles"]}
    parts = {
        metric: {
            **{part: _saving(states, a, b, metric) for part, (a, b) in PARTS.items()},
            "total": _saving(states, "w8a8", "remapped", metric),
            "noise_floor": _spread(_totals(plain), _totals(other_seed), states["w8a8"], metric),
        }
        for metric in METRICS
    }
    moved = {name: _words_moved(costs) for name, costs in (("w8a8", w8a8), ("kept", kept), ("remapped", remapped))}
    minimum = _compulsory(arch, layers, remapped)
    traffic = [
        {"level": lvl.name, "w8a8_words": moved["w8a8"].get(lvl.name, 0.0), "kept_words": moved["kept"].get(lvl.name, 0.0),
         "remapped_words": moved["remapped"].get(lvl.name, 0.0), "compulsory_words": minimum[lvl.name]}
        for lvl in arch.levels
    ]
    return {
        "objective": objective,
        "states": {s: states[s] for s in STATES},
        "parts": parts,
        "noise_seeds": [seed, seed + 1],
        "traffic": traffic,
    }


def decompose_module(module, arch: Arch, objective: str, *, seed: int = 0, cache=None) -> dict:
    """The decomposition of a mapped accel module (a compile at non-uniform bits, `--synergy`): each
    accel layer at its bits against the same layer at w8a8, its w8a8 mapping found by the mapper."""
    from quantloop.ir.accel import layers as accel_layers
    from quantloop.mapper import map_layer

    inputs = []
    for op in accel_layers(module):
        problem, bits = op.problem.to_costmodel(name=op.label), op.bits.to_costmodel()
        w8a8 = map_layer(problem, arch, _w8a8_like(bits), objective, cache=cache, seed=seed).mapping
        inputs.append(LayerInput(op.label, problem, w8a8, bits))
    return decompose(arch, inputs, objective, seed=seed, cache=cache)


def _w8a8_like(bits: Bits) -> Bits:
    return Bits(weights=8, inputs=8, outputs=8, psum=bits.psum)


def _saving(states: dict, before: str, after: str, metric: str) -> float:
    ref = states["w8a8"][metric]
    return (states[before][metric] - states[after][metric]) / ref if ref else 0.0


def _spread(a: dict, b: dict, ref: dict, metric: str) -> float:
    return abs(a[metric] - b[metric]) / ref[metric] if ref[metric] else 0.0


def percent(fraction: float, digits: int = 2, width: int = 0) -> str:
    """`fraction` as a percentage text, never "-0.00" (a rounding-size negative prints as zero)."""
    value = round(100 * fraction, digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:{width}.{digits}f}"


def summary_lines(decomposition: dict) -> list[str]:
    """Human-readable lines: one per metric, then the levels where traffic is above its minimum."""
    lines = []
    for metric in METRICS:
        p = decomposition["parts"][metric]
        lines.append(
            f"{metric:9s} saved {percent(p['total'], width=6)} % = MAC energy {percent(p['mac_energy'], width=6)} % + "
            f"packing {percent(p['packing'], width=6)} % + re-mapping {percent(p['remapping'], width=6)} % (mapper seed "
            f"noise {percent(p['noise_floor'])} %)"
        )
    for t in decomposition["traffic"]:
        if t["compulsory_words"]:
            lines.append(
                f"  {t['level']:14s} words moved: w8a8 {t['w8a8_words']:,.0f}, kept {t['kept_words']:,.0f}, "
                f"re-mapped {t['remapped_words']:,.0f}; compulsory {t['compulsory_words']:,.0f} "
                f"(re-mapped at {t['remapped_words'] / t['compulsory_words']:.2f}x the minimum)"
            )
    return lines


def print_decomposition(console, decomposition: dict) -> None:
    """The summary lines under their heading, on a rich console (the search's and `compile --synergy`'s)."""
    console.print("saving against w8a8, decomposed (re-mapping warm-started from the kept w8a8 mapping):")
    for line in summary_lines(decomposition):
        console.print(line, markup=False, highlight=False)
