"""Wall time of `quantloop compile` by phase, cold and warm cache, and peak memory.

For every model × target: one compile in a fresh process with an empty cache folder (cold: the
mapper searches every layer, calibration runs onnxruntime), then the same compile again (warm:
both answered from the cache). Each run is a child process, so its figures include Python start-up
and imports and its peak RSS is its own. Prints one row per phase (import of quantloop, model
import, each pass, mapping, each artefact: wall and CPU seconds, and the peak RSS so far, so the
phase that raises it shows), the totals and the peak memory, after `quantloop --help`. Goals on a 2-core machine: warm MobileNetV2 with all artefacts ≤ 3 s, cold
≤ 8 s; `quantloop --help` ≤ 0.5 s; VGG-16/19 ≤ 1.5 GB peak (`--models vgg16 --warm-only`).

    python bench/compile_speed.py [--models mobilenet_v2,resnet18] [--targets eyeriss,simba]
                                  [--emit all] [--workers N] [--warm-only]

CPU seconds are this process's per phase; the mapping's pool workers (the default on a cold compile
with 8 or more layers to search, `--workers N` to choose) are added in the CPU incl. workers line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in the child: times `import quantloop.driver`, compiles, prints the phases as JSON.
CHILD = r"""
import json, resource, sys, time
started, cpu = time.perf_counter(), time.process_time()
from quantloop.driver import compile
from quantloop.progress import Progress
imported, imported_cpu = time.perf_counter() - started, time.process_time() - cpu
model, target, emit, workers, out = sys.argv[1:6]
peaks = {"python imports": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

class PeakAfterPhase(Progress):
    def _end(self, phase, seconds, failed):
        peaks[phase.name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

result = compile(model, target=target, output_dir=out, force=True, emit=emit, workers=int(workers) or None,
                 progress=PeakAfterPhase())
print(json.dumps({
    "phases": {"python imports": imported, **result.phases},
    "cpu": {"python imports": imported_cpu, **result.phase_cpu},
    "peak_after": peaks,
    "wall": time.perf_counter() - started,
    "cpu_total": time.process_time() - cpu,
    "cpu_workers": sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) for f in ("ru_utime", "ru_stime")),
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "layers": len(result.layers),
    "cache_hits": sum(layer.cache_hit for layer in result.layers),
}))
"""


def _package_parent() -> str:
    return str(Path(__file__).resolve().parents[2])


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ, QUANTLOOP_CACHE_DIR=cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_parent(), env.get("PYTHONPATH", "")) if p)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_compile(model: str, target: str, emit: str, workers: int, cache: str, out: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, model, target, emit, str(workers), out],
        env=_env(cache), capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"compile {model} {target} failed:\n{proc.stderr}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["process_wall"] = time.perf_counter() - started
    return figures


def help_seconds(repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "quantloop", "--help"], env=_env(tempfile.gettempdir()),
                       capture_output=True, check=True)
        best = min(best, time.perf_counter() - started)
    return best


def print_runs(title: str, runs: dict[str, dict]) -> None:
    names: list[str] = []
    for figures in runs.values():
        names += [n for n in figures["phases"] if n not in names]
    kinds = list(runs)
    print(f"\n{title}")
    print(f"  {'phase':24s}" + "".join(f"{k + ' wall':>12s}{k + ' CPU':>10s}{'peak MB':>9s}" for k in kinds))
    for name in names:
        print(f"  {name:24s}" + "".join(
            f"{runs[k]['phases'].get(name, 0.0):12.2f}{runs[k]['cpu'].get(name, 0.0):10.2f}"
            f"{runs[k]['peak_after'].get(name, 0.0):9.0f}" for k in kinds))
    pad = " " * 19
    print(f"  {'total in process (s)':24s}" + "".join(f"{runs[k]['wall']:12.2f}{runs[k]['cpu_total']:10.2f}{'':9s}" for k in kinds))
    print(f"  {'CPU of mapping workers':24s}" + "".join(f"{'':12s}{runs[k]['cpu_workers']:10.2f}{'':9s}" for k in kinds))
    print(f"  {'CPU incl. workers (s)':24s}" + "".join(
        f"{'':12s}{runs[k]['cpu_total'] + runs[k]['cpu_workers']:10.2f}{'':9s}" for k in kinds))
    print(f"  {'wall incl. start-up (s)':24s}" + "".join(f"{runs[k]['process_wall']:12.2f}{pad}" for k in kinds))
    print(f"  {'peak memory (MB)':24s}" + "".join(f"{runs[k]['peak_mb']:12.0f}{pad}" for k in kinds))
    print(f"  {'layers / cache hits':24s}" + "".join(f"{runs[k]['layers']:>8d}/{runs[k]['cache_hits']:<3d}{pad}" for k in kinds))
    print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet18")
    parser.add_argument("--targets", default="eyeriss,simba")
    parser.add_argument("--emit", default="all", help="artefacts (default all)")
    parser.add_argument("--workers", type=int, default=0, help="mapping processes (default 0: the compile's default)")
    parser.add_argument("--warm-only", action="store_true", help="show only the warm run (the cold one still fills the cache)")
    args = parser.parse_args()

    print(f"quantloop --help: {help_seconds():.2f} s (best of 3)")
    for model in args.models.split(","):
        for target in args.targets.split(","):
            with tempfile.TemporaryDirectory(prefix="ql-bench-") as tmp:
                cache, out = os.path.join(tmp, "cache"), os.path.join(tmp, "out")
                first = run_compile(f"zoo:{model}", target, args.emit, args.workers, cache, out)
                warm = run_compile(f"zoo:{model}", target, args.emit, args.workers, cache, out)
                runs = {"warm": warm} if args.warm_only else {"cold": first, "warm": warm}
                print_runs(f"{model} on {target}, --emit {args.emit}, --workers {args.workers} (seconds)", runs)


if __name__ == "__main__":
    main()
