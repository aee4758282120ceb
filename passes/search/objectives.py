"""Hardware objectives of a candidate: energy (or EDP) through the mapper, packed weight memory.

Energy is Σ over layers of the mapper's best cost at the layer's (weight, input, output) bits.
Every distinct (problem, packing class) is mapped once per search (memoised here, and through
the on-disk mapper cache across searches); the keys a generation needs are mapped together, in
parallel with `workers`, or on the search's Dask pool while one is set (`pool`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quantloop.bits import LEGAL_BITS, PSUM_MODES
from quantloop.costmodel.model import evaluate, packing_tables
from quantloop.problem import Bits, Problem
from quantloop.costmodel.weight_memory import network_weight_bytes, weight_tiles
from quantloop.errors import QuantloopError
from quantloop.ir import make_context
from quantloop.ir.accel import layers
from quantloop.mapper import map_layers
from quantloop.passes.accel_lower import AccelLowerPass
from quantloop.passes.assign_bits import AssignBitsPass

LayerKey = tuple[Problem, Bits]


@dataclass
class MapperStats:
    lookups: int = 0
    cache_hits: int = 0
    mapped: int = 0
    seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.lookups if self.lookups else 0.0


class EnergyModel:
    """Per-layer best mappings at any bits, memoised; network totals of a candidate.

    Bits reach the cost model only through values per word (⌊word / b⌋ at every level that may
    keep the data space, and ⌊word / accumulator width⌋ for partial sums) and the per-MAC energy, which is the same for every mapping of a layer
    (MACs × energy per MAC). So for the `energy` and `latency` objectives the best mapping at bits b
    is the best mapping at any b' with the same values per word everywhere: such bits share one
    mapper call (at the widest of them, `packing_class`), and the layer's cost at its own bits is
    that mapping evaluated exactly by the cost model. For `edp` (energy × cycles, where the MAC
    energy does not cancel out of the argmin) every distinct bits is mapped on its own.
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        names: Sequence[str],
        arch,
        objective: str = "energy",
        *,
        workers: int = 1,
        cache=None,
        seed: int = 0,
        psum: str = PSUM_MODES[0],
    ) -> None:
        self.problems = [p.with_dims(name="") for p in problems]
        self.names = list(names)
        self.arch = arch
        self.objective = objective
        self.workers = workers
        self.cache = cache
        self.seed = seed
        self.psum = psum  # how partial sums are stored (`Bits.psum`, `--psum-bits`): the compile's, so candidates cost as compiled
        self.pool = None  # a distributed `quantloop.parallel` pool while the search runs on one
        self.mapped: dict[LayerKey, object] = {}
        self.costs: dict[LayerKey, object] = {}
        self.stats = MapperStats()
        self._words = {
            ds: sorted({lvl.word_bits for lvl in arch.levels if ds in lvl.may_keep} or {lvl.word_bits for lvl in arch.levels})
            for ds in ("Weights", "Inputs", "Outputs")
        }

    def keys(self, layer_bits: Sequence[tuple[int, int, int]], scheme: str | Sequence[str] = "int") -> list[LayerKey]:
        """(problem, bits) per layer; `scheme` is one weight scheme for all layers or one per layer."""
        schemes = [scheme] * len(self.problems) if isinstance(scheme, str) else list(scheme)
        return [
            (problem, Bits(weights=w, inputs=i, outputs=o, scheme=s, psum=self.psum))
            for problem, (w, i, o), s in zip(self.problems, layer_bits, schemes)
        ]

    def _widest_alike(self, dataspace: str, bits: int) -> int:
        """The widest legal width with the same values per word as `bits` at every keeping level."""
        words = self._words[dataspace]
        signature = [w // bits for w in words]
        alike = [b for b in LEGAL_BITS if b <= min(words) and [w // b for w in words] == signature]
        return max(alike, default=bits)

    def packing_class(self, bits: Bits) -> Bits:
        """The bits the mapper is asked for when mapping a layer at `bits` (see the class docstring)."""
        if self.objective == "edp":
            return bits
        widest = Bits(
            weights=self._widest_alike("Weights", bits.weights),
            inputs=self._widest_alike("Inputs", bits.inputs),
            outputs=self._widest_alike("Outputs", bits.outputs),
            scheme="int",
            psum=bits.psum,
        )
        # partial sums pack at the accumulator width max(o, w + a): the class must keep that packing too
        if (packing_tables(self.arch, widest)[1] != packing_tables(self.arch, bits)[1]).any():
            return bits
        return widest

    def ensure(self, candidates: Iterable[tuple[Sequence[tuple[int, int, int]], str]]) -> None:
        """Map every packing class the candidates need that is not known yet, in one parallel batch,
        then cost every new (layer, bits) with its class's mapping."""
        todo: dict[LayerKey, str] = {}
        new_keys: list[LayerKey] = []
        for layer_bits, scheme in candidates:
            for name, key in zip(self.names, self.keys(layer_bits, scheme)):
                if key in self.costs:
                    continue
                new_keys.append(key)
                mapped_key = (key[0], self.packing_class(key[1]))
                if mapped_key not in self.mapped and mapped_key not in todo:
                    todo[mapped_key] = name
        if todo:
            requests = [(name, problem.with_dims(name=name), bits) for (problem, bits), name in todo.items()]
            results = map_layers(
                requests, self.arch, self.objective, workers=self.workers, cache=self.cache, seed=self.seed,
                pool=self.pool,
            )
            for key, result in zip(todo, results):
                self.mapped[key] = result
                self.stats.lookups += 1
                self.stats.cache_hits += bool(getattr(result, "cache_hit", False))
                self.stats.mapped += not getattr(result, "cache_hit", False)
                self.stats.seconds += float(getattr(result, "seconds", 0.0))
        for problem, bits in new_keys:
            if (problem, bits) in self.costs:
                continue
            mapped_bits = self.packing_class(bits)
            result = self.mapped[(problem, mapped_bits)]
            self.costs[(problem, bits)] = (
                result.cost if mapped_bits == bits else evaluate(self.arch, problem, result.mapping, bits, check=False)
            )

    def layer_costs(self, layer_bits: Sequence[tuple[int, int, int]], scheme: str | Sequence[str] = "int") -> list:
        self.ensure([(layer_bits, scheme)])
        return [self.costs[key] for key in self.keys(layer_bits, scheme)]

    def weight_tiles(self, layer_bits: Sequence[tuple[int, int, int]], scheme: str | Sequence[str] = "int") -> list[int]:
        """Each layer's DRAM weight tile count under the mapping it gets at `layer_bits`."""
        self.ensure([(layer_bits, scheme)])
        return [weight_tiles(self.mapped[(problem, self.packing_class(bits))].mapping)
                for problem, bits in self.keys(layer_bits, scheme)]

    def mapping(self, problem: Problem, bits: Bits):
        self.ensure([([(bits.weights, bits.inputs, bits.outputs)] * len(self.problems), bits.scheme)])
        return self.mapped[(problem, self.packing_class(bits))].mapping

    def totals(self, layer_bits: Sequence[tuple[int, int, int]], scheme: str | Sequence[str] = "int") -> tuple[float, int]:
        """(energy in pJ, cycles) of the network: sums over layers."""
        costs = self.layer_costs(layer_bits, scheme)
        return sum(c.total_energy_pj for c in costs), sum(int(c.cycles) for c in costs)

    def fixed_mapping_totals(
        self,
        layer_bits: Sequence[tuple[int, int, int]],
        reference_bits: Sequence[tuple[int, int, int]],
        scheme: str | Sequence[str] = "int",
    ) -> tuple[float, int]:
        """Energy and cycles at `layer_bits` with every layer kept at the mapping found for
        `reference_bits` (only the packing changes): the synergy ablation."""
        self.ensure([(reference_bits, "int")])
        energy, cycles = 0.0, 0
        for (problem, bits), (_, ref_bits) in zip(self.keys(layer_bits, scheme), self.keys(reference_bits)):
            mapping = self.mapped[(problem, self.packing_class(ref_bits))].mapping
            try:
                cost = evaluate(self.arch, problem, mapping, bits, check=True)
            except QuantloopError as err:
                raise QuantloopError(
                    f"synergy ablation: the {ref_bits} mapping of a layer is not legal at {bits} ({err})"
                ) from err
            energy += cost.total_energy_pj
            cycles += int(cost.cycles)
        return energy, cycles


def weight_bytes(counts: Sequence[int], weight_bits: Sequence[int], word_bits: int,
                 tiles: Sequence[int] | None = None, bias_counts: Sequence[int] | None = None) -> int:
    """Packed weight memory in bytes, as `weights.bin` stores it (`costmodel.weight_memory`): per-tile
    word padding with each layer's DRAM tile count, plus int32 biases padded to a word."""
    return network_weight_bytes(counts, [int(b) for b in weight_bits], int(word_bits), tiles, bias_counts)


def layer_problems(module, target: str) -> tuple[list[str], list[Problem], list[str]]:
    """(names, problems, kinds) of the compute layers, as accel-lower derives them (on a w8a8 clone)."""
    clone = module.clone()
    ctx = make_context()
    AssignBitsPass(bits="w8a8").apply(ctx, clone)
    AccelLowerPass(target=target).apply(ctx, clone)
    found = layers(clone)
    return (
        [op.label for op in found],
        [op.problem.to_costmodel(name=op.label) for op in found],
        [op.kind.data.value for op in found],
    )
