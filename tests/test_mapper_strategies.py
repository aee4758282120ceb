"""The mapper's search strategies sit behind one interface (`mapper.search.Strategy`)."""

from quantloop.problem import Bits, Problem
from quantloop.mapper.search import PASS, STRATEGIES, Exhaustive, Job, search
from quantloop.targets.registry import load_target

LAYER = Problem(C=4, M=4, P=4, Q=2, R=3, S=1)


class Recorder:
    name = "recorder"

    def __init__(self, result=PASS):
        self.jobs, self.result = [], result

    def run(self, job: Job):
        self.jobs.append(job)
        return self.result


def test_strategies_run_in_order_until_one_decides():
    arch = load_target("eyeriss")
    default = search(arch, LAYER, Bits(8, 8, 8))
    first, last = Recorder(), Recorder()
    chained = search(arch, LAYER, Bits(8, 8, 8), strategies=(first, *STRATEGIES, last))
    assert len(first.jobs) == 1 and not last.jobs  # the exhaustive strategy decided
    assert (chained.optimal, chained.considered) == (default.optimal, default.considered)
    assert chained.arrays.mapping(0) == default.arrays.mapping(0)


def test_a_strategy_that_decides_ends_the_search():
    arch = load_target("eyeriss")
    stop = Recorder(result=None)
    assert search(arch, LAYER, Bits(8, 8, 8), strategies=(stop, Exhaustive())) is None
    assert len(stop.jobs) == 1
