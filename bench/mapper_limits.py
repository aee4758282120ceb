"""Map layers whose mapspace is astronomically large and print time, peak memory and whether the result is
proven optimal (sampled mapspaces never are). Each case runs in its own process so peak RSS is per case.

    python bench/mapper_limits.py            # all cases
    python bench/mapper_limits.py deep12     # one case
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "simba_C55440_M4096": ("dict(C=55440, M=4096)", "simba"),
    "simba_C720720_M720720": ("dict(C=720720, M=720720)", "simba"),
    "simba_prime_2^61-1": ("dict(C=2**61 - 1)", "simba"),
    "deep12_C720720": ("dict(C=720720, M=64, P=14, Q=14, R=3, S=3)", "deep12"),
}


def deep_target(levels: int = 12) -> str:
    """A target with `levels` buffer levels below DRAM, each with a fan-out of 2."""
    lines = ["name: deep12", "description: 12 levels of fan-out 2", "levels:",
             "  - {name: DRAM, word_bits: 8, width: 64, energy_pj: {read: 100.0, write: 100.0, update: 100.0}}"]
    for i in range(levels):
        lines.append(f"  - {{name: L{i}, word_bits: 8, width: 64, depth: {max(8, 4096 >> i)}, "
                     "energy_pj: {read: 1.0, write: 1.0, update: 1.0}, fanout: {x: 2}}")
    lines += ["compute: {name: mac, energy_pj: 1.0}"]
    return "\n".join(lines) + "\n"


def run_case(name: str, target: str) -> None:
    from quantloop.problem import Bits, Problem
    from quantloop.errors import QuantloopError
    from quantloop.mapper.api import map_layer

    started = time.perf_counter()
    try:
        result = map_layer(Problem(**eval(CASES[name][0]), name=name), target, Bits(8, 8, 8))
        what = f"mapped, {'proven optimal' if result.optimal else 'not proven optimal'}, " \
               f"{result.mappings_considered} mappings considered"
    except QuantloopError as err:
        what = f"refused: {err}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: {what}; {time.perf_counter() - started:.1f} s, peak RSS {peak:.0f} MB", flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        name = sys.argv[2]
        target = CASES[name][1]
        if target == "deep12":
            target = str(Path(tempfile.mkdtemp()) / "deep12.yaml")
            Path(target).write_text(deep_target())
        run_case(name, target)
        return
    for name in sys.argv[1:] or list(CASES):
        subprocess.run([sys.executable, __file__, "--case", name], check=False)


if __name__ == "__main__":
    main()
