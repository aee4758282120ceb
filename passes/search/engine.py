"""The mixed-precision co-search: from a canonicalized float qnn module to a Pareto front.

Objectives (all minimised by NSGA-II): network energy (or EDP, or latency) from the mapper at every layer's
bits, packed weight memory, and −accuracy of the exact fake-quant model on the validation data
(selection data; the test split is never seen here). Constraint: accuracy drop ≤
`max_accuracy_drop` percentage points against the float model on the same data.
Every candidate evaluated is archived; the front is the non-dominated set of the archive and
the chosen point the lowest-energy (or EDP) one that meets the constraint.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from quantloop.bits import PSUM_MODES
from quantloop.errors import QuantloopError
from quantloop.mapper import MapCache
from quantloop.options import DEFAULT_ACT_RANGE, DEFAULT_GENERATIONS, DEFAULT_MAX_CALIB_SAMPLES, DEFAULT_PERCENTILE, DEFAULT_POPULATION, DEFAULT_QAT_EPOCHS, DEFAULT_WEIGHT_CLIP, OBJECTIVES
from quantloop.passes.calibrate import first_samples
from quantloop.passes.search.accuracy_cache import AccuracyCache, AccuracyStats, CachedAccuracy
from quantloop.passes.search.fakequant import FakeQuantEvaluator, check_inputs, float_predict
from quantloop.passes.search.objectives import EnergyModel, MapperStats, layer_problems, weight_bytes
from quantloop.passes.search.space import Config, SearchSpace, build_space
from quantloop.targets.registry import load_target


@dataclass(frozen=True)
class SearchOptions:
    target: str
    objective: str = "energy"
    max_accuracy_drop: float = 0.5
    widths: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    population: int = DEFAULT_POPULATION
    generations: int = DEFAULT_GENERATIONS
    seed: int = 0
    workers: int | None = None
    """None: a `LocalCluster` when the search is large enough (`quantloop.parallel.auto_workers`), else this
    process (the mapper then maps in this process too, as with 1)."""
    scheduler: str | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    weight_clip: str = DEFAULT_WEIGHT_CLIP
    act_range: str = DEFAULT_ACT_RANGE
    percentile: float = DEFAULT_PERCENTILE
    max_calib_samples: int = DEFAULT_MAX_CALIB_SAMPLES
    progress: bool = True
    psum_bits: str = PSUM_MODES[0]  # how partial sums are stored (CompileOptions.psum_bits)
    accuracy: str = "ptq"  # "qat": a PTQ phase, then a QAT phase judging PTQ-infeasible candidates after QAT (`phases`)
    qat_epochs: int = DEFAULT_QAT_EPOCHS

    @property
    def phases(self) -> tuple[bool, ...]:
        """Whether QAT is on in each NSGA-II phase of `generations`: `accuracy="qat"` runs the PTQ search, then
        continues it with QAT in the loop, so its archive holds the PTQ search's and it never chooses a costlier point."""
        return (False, True) if self.accuracy == "qat" else (False,)

    @property
    def total_generations(self) -> int:
        return self.generations * len(self.phases)


@dataclass(frozen=True)
class Point:
    config: Config
    energy_pj: float
    cycles: int
    weight_bytes: int
    accuracy: float
    feasible: bool
    ptq_accuracy: float | None = None  # set when `accuracy` is the QAT model's (QAT in the loop)

    @property
    def qat(self) -> bool:
        return self.ptq_accuracy is not None

    @property
    def edp(self) -> float:
        return self.energy_pj * self.cycles

    def cost(self, objective: str) -> float:
        """The first objective: energy (pJ), EDP (pJ·cycles) or latency (cycles)."""
        if objective == "edp":
            return self.edp
        return float(self.cycles) if objective == "latency" else self.energy_pj


@dataclass
class SearchResult:
    space: SearchSpace
    options: SearchOptions
    target_name: str
    accuracy_metric: str
    float_accuracy: float
    reference: Point
    archive: list[Point]
    front: list[Point]
    chosen: Point | None
    ablation: dict | None
    mapper: MapperStats
    seconds: float
    generations_run: int = 0
    synergy: dict | None = None  # passes.search.synergy.decompose of the chosen point
    energy_model: EnergyModel | None = None  # for decompositions of other points (QAT's choice)
    cache: object = None
    accuracy_stats: AccuracyStats = field(default_factory=AccuracyStats)
    energy_seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    qat: object = None  # passes.search.qat.QatAccuracy under QAT in the loop (its stats; retrains the chosen)

    @property
    def best_accuracy(self) -> Point:
        return max(self.archive, key=lambda p: (p.accuracy, -p.energy_pj))

    def bits_file(self, point: Point) -> dict[str, dict[str, int]]:
        return self.space.bits_file(point.config)


def target_schemes(arch) -> tuple[str, ...]:
    """`int`, plus the power-of-two schemes the target has shift-add PEs for (and its PEs execute).
    PEs without a multiplier (LightPE-1 / -2) cannot run the search's w8a8 int reference: an error."""
    c = arch.compute
    if c.schemes is not None and "int" not in c.schemes:
        raise QuantloopError(
            f"--search: the {c.pe_type} PEs of target {arch.name} execute only {'/'.join(sorted(c.schemes))} weights, and "
            "the search measures against uniform w8a8 int; use `quantloop explore`, or PEs that also multiply (eyeriss_hybrid)"
        )
    return ("int", *sorted(s for s in ("pot", "pot2") if s in c.shift_add_energy and (c.schemes is None or s in c.schemes)))


def check_widths(arch, widths: Sequence[int]) -> None:
    """A bit-width the target cannot hold (wider than a level's word, or weights wider than its PEs
    execute) is an error naming both."""
    for lvl in arch.levels:
        too_wide = [b for b in widths if b > lvl.word_bits]
        if too_wide:
            raise QuantloopError(
                f"--bits-range: {max(too_wide)}-bit values do not fit the {lvl.word_bits}-bit word of level "
                f"{lvl.name} of target {arch.name}; use at most {lvl.word_bits} bits"
            )
    limit = arch.compute.max_weight_bits
    if limit is not None and max(widths) > limit:
        raise QuantloopError(
            f"--bits-range: the {arch.compute.pe_type} PEs of target {arch.name} execute weights of at most {limit} bits"
        )


class Candidates:
    """Evaluates genes into archived `Point`s (memoised by configuration)."""

    def __init__(self, space, energy: EnergyModel, accuracy: CachedAccuracy, float_accuracy, options, qat=None):
        self.space = space
        self.energy = energy
        self.accuracy = accuracy
        self.qat = qat  # passes.search.qat.QatAccuracy: QAT in the loop (run here, in order), or None
        self.best_cost = float("inf")  # of the cheapest feasible point so far
        self.float_accuracy = float_accuracy
        self.options = options
        self.word_bits = energy.arch.levels[0].word_bits
        self.counts = [layer.weight_count for layer in space.layers]
        self.bias_counts = [p.G * p.M if layer.bias is not None else 0 for layer, p in zip(space.layers, energy.problems)]
        self.points: dict[Config, Point] = {}
        self.energy_seconds = 0.0
        self.pool = None  # where the evaluations run (`quantloop.parallel`); None: here
        self.requested = 0  # candidates NSGA-II asked for (evaluated or memoised)
        self.on_progress = None  # called with (completed, total) evaluations

    def evaluate(self, configs: Sequence[Config]) -> list[Point]:
        new = [c for c in dict.fromkeys(configs) if c not in self.points]
        started = time.perf_counter()
        self.energy.ensure([(self.space.layer_bits(c), c.scheme) for c in new])
        totals = {c: self.energy.totals(self.space.layer_bits(c), c.scheme) for c in new}
        self.energy_seconds += time.perf_counter() - started
        accuracies = self.accuracy.top1_many(new, self.pool, progress=self._batch_progress(len(configs)))
        for config, acc in zip(new, accuracies):
            energy, cycles = totals[config]
            tiles = self.energy.weight_tiles(self.space.layer_bits(config), config.scheme)
            stored = weight_bytes(self.counts, config.weights, self.word_bits, tiles, self.bias_counts)
            self._record(Point(config, energy, cycles, stored, acc,
                               within_drop(self.float_accuracy, acc, self.options.max_accuracy_drop)))
        # QAT in the loop, after the batch's PTQ-feasible points have lowered `best_cost`; memoised points
        # are considered too (those of a PTQ phase, judged before QAT was on)
        for config in dict.fromkeys(configs):
            point = self.points[config]
            if self._worth_qat(point):
                qat_acc = self.qat.top1(config)
                self._record(replace(point, accuracy=qat_acc, ptq_accuracy=point.accuracy,
                                     feasible=within_drop(self.float_accuracy, qat_acc, self.options.max_accuracy_drop)))
        return [self.points[c] for c in configs]

    def _record(self, point: Point) -> None:
        if point.feasible:
            self.best_cost = min(self.best_cost, point.cost(self.options.objective))
        self.points[point.config] = point

    def _worth_qat(self, point: Point) -> bool:
        """QAT in the loop fine-tunes a candidate PTQ leaves infeasible (once) only if it could become the choice
        (it costs less than the cheapest feasible point so far) and its PTQ accuracy is within
        `qat.LOOP_MARGIN_PP` of the float model's (further down a short fine-tune rarely recovers)."""
        from quantloop.passes.search.qat import LOOP_MARGIN_PP

        return (self.qat is not None and not point.feasible and not point.qat and point.config.scheme == "int"
                and point.cost(self.options.objective) < self.best_cost
                and (self.float_accuracy - point.accuracy) * 100.0 <= LOOP_MARGIN_PP)

    def worth_qat_front(self, limit: int) -> list[Point]:
        """The archive's candidates QAT in the loop would fine-tune now (`_worth_qat`): their non-dominated set,
        at most `limit` spread evenly over it by cost. The QAT phase starts from these beside the PTQ phase's
        final population, whose constrained survival keeps few infeasible candidates."""
        worth = [p for p in self.points.values() if self._worth_qat(p)]
        front = pareto_front(worth, self.options.objective)
        if len(front) <= limit:
            return front
        return [front[i] for i in np.unique(np.linspace(0, len(front) - 1, limit).round().astype(int))]

    def _batch_progress(self, batch: int):
        """Progress of one batch's new evaluations, as completed / total of the whole search."""
        if self.on_progress is None:
            return None
        base, total = self.requested, self.options.population * self.options.total_generations
        return lambda done, new: self.on_progress(min(total, base + round(done * batch / max(new, 1))), total)

    def objectives(self, genes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        points = self.evaluate([self.space.decode(g) for g in genes])
        self.requested += len(genes)
        f = np.array([[p.cost(self.options.objective), p.weight_bytes, -p.accuracy] for p in points], dtype=float)
        g = np.array([[(self.float_accuracy - p.accuracy) * 100.0 - self.options.max_accuracy_drop] for p in points])
        return f, g

    def best_feasible(self) -> Point | None:
        feasible = [p for p in self.points.values() if p.feasible]
        if not feasible:
            return None
        return min(feasible, key=lambda p: (p.cost(self.options.objective), -p.accuracy, p.weight_bytes))


def within_drop(float_accuracy: float, accuracy: float, max_drop_pp: float) -> bool:
    """The accuracy constraint: at most `max_drop_pp` percentage points below the float model."""
    return (float_accuracy - accuracy) * 100.0 <= max_drop_pp + 1e-9


def pareto_front(points: Sequence[Point], objective: str) -> list[Point]:
    """The non-dominated points (cost, weight bytes, −accuracy), by increasing cost."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if not points:
        return []
    f = np.array([[p.cost(objective), p.weight_bytes, -p.accuracy] for p in points], dtype=float)
    idx = NonDominatedSorting().do(f, only_non_dominated_front=True)
    return sorted((points[i] for i in idx), key=lambda p: (p.cost(objective), -p.accuracy))


def search_bits(
    module,
    options: SearchOptions,
    calib_x: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray | None,
    *,
    console=None,
    data_names: tuple[str, str] = ("calibration data", "validation data"),
    train: tuple[np.ndarray, np.ndarray] | None = None,
) -> SearchResult:
    """Run the co-search on a canonicalized float module (left unchanged).

    `val_y` None selects the fidelity proxy: the labels are the float model's own top-1 on
    `val_x`, so the accuracy is the top-1 agreement with the float model. `train` (x, y) is the QAT
    training data, needed by `options.accuracy == "qat"` (QAT in the loop).
    """
    started = time.perf_counter()
    _check_options(options)
    arch = load_target(options.target)
    check_widths(arch, options.widths)
    if 8 not in options.widths:
        raise QuantloopError("--bits-range: must include 8 (the uniform w8a8 reference point)")
    space = build_space(module, tuple(options.widths), target_schemes(arch))
    calib_x, _ = check_inputs(space, calib_x, None, data_names[0], None)
    batch = space.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    calib_x = first_samples(calib_x, batch, options.max_calib_samples)
    val_x, val_y, metric, float_accuracy = _validation_labels(space, val_x, val_y, data_names[1])

    names, problems, _ = layer_problems(module, options.target)
    if names != [layer.name for layer in space.layers]:
        raise QuantloopError("qnn-search-bits: accel-lower names the layers differently from the search space")
    cache = MapCache(options.cache_dir) if options.use_cache else None
    energy = EnergyModel(problems, names, arch, options.objective, workers=options.workers or 1, cache=cache, seed=options.seed,
                         psum=options.psum_bits)
    accuracy = CachedAccuracy(
        space, calib_x, val_x, val_y, metric=metric, weight_clip=options.weight_clip, act_range=options.act_range,
        percentile=options.percentile, cache=AccuracyCache(options.cache_dir) if options.use_cache else None,
        # a partial, not a lambda: Dask workers receive it (pickled) and build their own evaluator
        make_evaluator=partial(
            FakeQuantEvaluator, space, calib_x, weight_clip=options.weight_clip, act_range=options.act_range,
            percentile=options.percentile,
        ),
    )
    qat = _qat_accuracy(space, accuracy, calib_x, val_x, val_y, metric, float_accuracy, train, options)
    candidates = Candidates(space, energy, accuracy, float_accuracy, options, qat)
    reference, generations_run = _evolve(space, candidates, energy, options, console)

    archive = list(candidates.points.values())
    chosen = candidates.best_feasible()
    ablation = synergy_ablation(energy, space, chosen, reference) if chosen is not None else None
    synergy = decompose_chosen(energy, space, chosen, cache, options.seed) if chosen is not None else None
    return SearchResult(
        space=space, options=options, target_name=arch.name, accuracy_metric=metric, float_accuracy=float_accuracy,
        reference=reference, archive=archive, front=pareto_front(archive, options.objective), chosen=chosen,
        ablation=ablation, mapper=energy.stats, seconds=time.perf_counter() - started, generations_run=generations_run,
        accuracy_stats=accuracy.stats, energy_seconds=candidates.energy_seconds, synergy=synergy,
        energy_model=energy, cache=cache, qat=qat,
    )


def _qat_accuracy(space, accuracy: CachedAccuracy, calib_x, val_x, val_y, metric: str, float_accuracy: float, train,
                  options: SearchOptions):
    """QAT in the loop's judge (`passes.search.qat.QatAccuracy`, confirming accepted runs against the search's
    constraint), sharing the PTQ evaluator's calibration; None under PTQ."""
    if options.accuracy != "qat":
        return None
    from quantloop.passes.search.qat import QatAccuracy, check_trainable

    if train is None or metric != "top1":
        raise QuantloopError("--accuracy qat: needs labelled training and validation data")
    check_trainable(space)  # before the PTQ phase, not after it

    def shared_evaluator():
        if accuracy.evaluator is None:
            accuracy.evaluator = accuracy.make_evaluator()
        return accuracy.evaluator

    return QatAccuracy(
        space, shared_evaluator, calib_x, train[0], train[1], val_x, val_y, epochs=options.qat_epochs, seed=options.seed,
        cache=AccuracyCache(options.cache_dir) if options.use_cache else None,
        settings={"weight_clip": options.weight_clip, "act_range": options.act_range, "percentile": options.percentile},
        constraint=(float_accuracy, options.max_accuracy_drop),
    )


def _check_options(options: SearchOptions) -> None:
    """The search settings a user can get wrong, each refused in one line."""
    if options.objective not in OBJECTIVES:
        raise QuantloopError(f"qnn-search-bits: objective '{options.objective}' is not one of {', '.join(OBJECTIVES)}")
    if options.population < 2 or options.generations < 1:
        raise QuantloopError("qnn-search-bits: --population must be at least 2 and --generations at least 1")
    if options.max_accuracy_drop < 0:
        raise QuantloopError(f"--max-accuracy-drop {options.max_accuracy_drop}: must not be negative")


def _validation_labels(space: SearchSpace, val_x: np.ndarray, val_y: np.ndarray | None,
                       name: str) -> tuple[np.ndarray, np.ndarray, str, float]:
    """(val_x, labels, metric, float accuracy): given labels score top-1; without them the float model's own
    top-1 stands in (metric "agreement", the fidelity proxy)."""
    num_classes = int(np.prod([d.dim_value for d in space.model.graph.output[0].type.tensor_type.shape.dim[1:]]))
    val_x, val_y = check_inputs(space, val_x, val_y, name, num_classes)
    float_out = float_predict(space, val_x).reshape(len(val_x), -1)
    if val_y is None:
        metric, val_y = "agreement", np.argmax(float_out, axis=1)
    else:
        metric = "top1"
    return val_x, val_y, metric, float(np.mean(np.argmax(float_out, axis=1) == val_y))


def _evolve(space: SearchSpace, candidates: Candidates, energy: EnergyModel, options: SearchOptions,
            console) -> tuple[Point, int]:
    """Score the uniform w8a8 reference, then run NSGA-II (on the Dask pool when there is one); returns the
    reference point and the generations run."""
    from quantloop.parallel import CLUSTER_MIN_CANDIDATES, open_pool
    from quantloop.passes.search.nsga import run_nsga2

    generations_run = 0
    with open_pool(options.workers, options.scheduler, evaluations=options.population * options.total_generations,
                   min_evaluations=CLUSTER_MIN_CANDIDATES) as pool, _progress(console, options) as update:
        # on Dask, every generation's new mappings and accuracies are its tasks (the mapper's own
        # process pool is not used then); in one process, the mapper keeps its `workers` pool
        if pool.distributed:
            candidates.pool = energy.pool = pool
            energy.workers = 1
        qat, candidates.qat = candidates.qat, None  # phases judge by PTQ until QAT is on
        reference = candidates.evaluate([space.decode(space.uniform(8, 8))])[0]
        candidates.on_progress = lambda done, total: update(generations_run, candidates.best_feasible(),
                                                            energy.stats.hit_rate, done)
        offset = 0

        def on_generation(gen: int) -> None:
            nonlocal generations_run
            generations_run = offset + gen
            update(generations_run, candidates.best_feasible(), energy.stats.hit_rate, candidates.requested)

        try:
            final = None
            for qat_on in options.phases:
                if qat_on:  # continue the PTQ phase from its final population and the archive's rescuable points
                    candidates.qat = qat
                offset = generations_run
                final = run_nsga2(
                    space, candidates.objectives, population=options.population, generations=options.generations,
                    seed=options.seed, on_generation=on_generation,
                    start=None if final is None else _qat_start(space, candidates, final),
                )
        finally:
            candidates.pool = energy.pool = None
            energy.workers = options.workers or 1
    return reference, generations_run


def _qat_start(space: SearchSpace, candidates: Candidates, final: np.ndarray) -> np.ndarray:
    """The QAT phase's first population: up to half of it the PTQ archive's candidates QAT could rescue
    (`Candidates.worth_qat_front`), the rest the PTQ phase's final population in its order."""
    size = len(final)
    rows = [space.encode(list(p.config.weights), list(p.config.activations), p.config.scheme)
            for p in candidates.worth_qat_front(size // 2)]
    unique = list({tuple(int(g) for g in row): row for row in [*rows, *final]}.values())
    return np.array(unique[:size])


def decompose_chosen(energy: EnergyModel, space: SearchSpace, chosen: Point, cache, seed: int) -> dict:
    """The synergy decomposition of the chosen point against uniform w8a8 (`passes.search.synergy`)."""
    from quantloop.passes.search.synergy import LayerInput, decompose

    reference = energy.keys([(8, 8, 8)] * len(energy.problems))
    layers = [
        LayerInput(name, problem, energy.mapping(problem, ref_bits), bits)
        for name, (problem, bits), (_, ref_bits) in zip(
            energy.names, energy.keys(space.layer_bits(chosen.config), chosen.config.scheme), reference
        )
    ]
    return decompose(energy.arch, layers, energy.objective, seed=seed, cache=cache)


def synergy_ablation(energy: EnergyModel, space: SearchSpace, chosen: Point, reference: Point) -> dict:
    """Chosen bits with every layer re-mapped vs with the w8a8 mappings kept (packing only)."""
    bits = space.layer_bits(chosen.config)
    fixed_energy, fixed_cycles = energy.fixed_mapping_totals(bits, space.layer_bits(reference.config), chosen.config.scheme)
    saving = reference.energy_pj - chosen.energy_pj
    remap_saving = fixed_energy - chosen.energy_pj
    return {
        "w8a8_energy_pj": reference.energy_pj,
        "remapped_energy_pj": chosen.energy_pj,
        "remapped_cycles": chosen.cycles,
        "fixed_w8a8_mapping_energy_pj": fixed_energy,
        "fixed_w8a8_mapping_cycles": fixed_cycles,
        "saving_vs_w8a8": saving / reference.energy_pj if reference.energy_pj else 0.0,
        "saving_packing_only": (reference.energy_pj - fixed_energy) / reference.energy_pj if reference.energy_pj else 0.0,
        "remapping_share_of_saving": remap_saving / saving if saving > 0 else 0.0,
    }


class _progress:
    """The search's progress (generation, best feasible energy, mapper cache hit rate): a rich bar on a
    terminal, one plain line per generation otherwise (`quantloop.progress.plain_line`), or nothing."""

    def __init__(self, console, options: SearchOptions) -> None:
        self.console = console
        self.options = options
        self.bar = None

    def __enter__(self):
        if not self.options.progress:
            return lambda *a: None
        objective = self.options.objective
        unit = {"edp": "pJ·cycles", "latency": "cycles"}.get(objective, "µJ")
        total = self.options.total_generations
        evaluations = self.options.population * total

        def best_text(best) -> str:
            value = "—" if best is None else (
                f"{best.energy_pj / 1e6:.4f}" if objective == "energy" else f"{best.cost(objective):.4g}"
            )
            return f"best feasible {value} {unit}"

        if self.console is None or not self.console.is_terminal:
            import sys

            from quantloop.progress import plain_line

            stream = sys.stderr if self.console is None else self.console.file
            started = time.perf_counter()

            shown = [0]

            def plain(gen, best, hit_rate, done):
                if gen == shown[0]:  # one line per generation, not per evaluation
                    return
                shown[0] = gen
                summary = f" ({best_text(best)}, cache hits {hit_rate:.0%}, {done}/{evaluations} evaluations)"
                print(plain_line(f"search generation {gen} of {total}", time.perf_counter() - started, summary),
                      file=stream, flush=True)

            return plain
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]search[/] gen"), MofNCompleteColumn(), BarColumn(),
            TextColumn("{task.fields[best]}"), TextColumn("cache hits {task.fields[hits]}"),
            TextColumn("{task.fields[done]} evaluations"), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.bar.__enter__()
        task = self.bar.add_task("search", total=total, best="best —", hits="0%", done=f"0/{evaluations}")

        def update(gen, best, hit_rate, done):
            self.bar.update(task, completed=gen, best=best_text(best), hits=f"{hit_rate:.0%}", done=f"{done}/{evaluations}")

        return update

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
