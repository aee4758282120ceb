"""CPU per layer mapping on a Dask worker vs in this process (`quantloop.parallel`).

Maps the same N distinct zoo:mobilenet_v2_digits layers (eyeriss, w8a8, cold: no mapper cache) three ways,
each after one warm-up mapping of another layer (imports, ortools, first-call costs):
in this process; on a worker of `quantloop.parallel.open_pool` (quantloop's LocalCluster settings); on a
worker of a LocalCluster with Dask's default settings. Prints CPU seconds (user + sys of the process that
mapped, so the worker's own threads count; and of the mapping thread alone), minor page faults, the ratio
to in-process, and what a worker costs before its first evaluation (start-up, warm-up). Then what each
2-worker cluster costs while idle (scheduler + client + nannies + workers, CPU-s per second): it is paid for
every second a search spends in the client (calibration, fake-quant models, the front). CPU, not wall: the
figures hold on a shared machine.

    python bench/dask_worker_cpu.py [--layers 8] [--repeat 2] [--idle 15]
"""

from __future__ import annotations

import argparse
import resource
import time


def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": r.ru_utime + r.ru_stime, "sys": r.ru_stime, "thread": time.thread_time(), "faults": r.ru_minflt,
            "wall": time.perf_counter()}


def map_jobs(jobs: list) -> tuple[dict[str, float], dict[str, float], list[float]]:
    """(usage of this process before, the usage the mappings took, their energies)."""
    from quantloop.mapper.api import _map_one

    before = _usage()
    energies = [_map_one(job).cost.total_energy_pj for job in jobs]
    after = _usage()
    return before, {k: after[k] - before[k] for k in before}, energies


def layer_jobs(n: int) -> tuple[list, list]:
    """(one warm-up job, n measured jobs): distinct layers, no cache."""
    from quantloop.frontend.zoo import load_zoo_model
    from quantloop.mapper.api import _problem_key
    from quantloop.mapper.layers_from_onnx import problems_from_onnx
    from quantloop.problem import Bits
    from quantloop.targets.registry import load_target

    arch, bits = load_target("eyeriss"), Bits.parse("w8a8")
    seen, jobs = set(), []
    for name, problem in problems_from_onnx(load_zoo_model("zoo:mobilenet_v2_digits")):
        key = tuple(_problem_key(problem).items())
        if key not in seen:
            seen.add(key)
            jobs.append((name, problem, bits, arch, "energy", None, 0, None))
    return jobs[:1], jobs[1:n + 1]


def on_worker(client, warm: list, jobs: list, repeat: int) -> list:
    worker = next(iter(client.scheduler_info()["workers"]))
    run = lambda js: client.submit(map_jobs, js, pure=False, workers=[worker]).result()  # noqa: E731
    started, warmed, _ = run(warm)
    return [started, warmed] + [run(jobs) for _ in range(repeat)]


def idle_cpu(seconds: float) -> float:
    """CPU-s per second this process and its children (the cluster) take over `seconds` of doing nothing."""
    import psutil

    me = psutil.Process()
    processes = [me, *me.children(recursive=True)]

    def total() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    before = total()
    time.sleep(seconds)
    return (total() - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--idle", type=float, default=15.0, help="seconds to measure each idle cluster")
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    from quantloop.parallel import open_pool

    warm, jobs = layer_jobs(args.layers)
    n = len(jobs)
    _, warmed, _ = map_jobs(warm)
    runs = {"in-process": [None, warmed] + [map_jobs(jobs) for _ in range(args.repeat)]}
    idle = {}
    with open_pool(2) as pool:
        runs["Dask worker, quantloop settings"] = on_worker(pool.client, warm, jobs, args.repeat)
        idle["quantloop settings"] = idle_cpu(args.idle)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        runs["Dask worker, Dask defaults"] = on_worker(client, warm, jobs, args.repeat)
        idle["Dask defaults"] = idle_cpu(args.idle)

    base = min(d["cpu"] for _, d, _ in runs["in-process"][2:])
    energies = {name: [sum(e) for _, _, e in r[2:]] for name, r in runs.items()}
    print(f"{n} MobileNetV2-digits layer mappings (eyeriss w8a8, no cache), best of {args.repeat}:")
    print(f"{'where':34s} {'CPU s':>6s} {'ms/map':>7s} {'sys s':>6s} {'thread s':>8s} {'faults':>8s} {'vs in-process':>13s} "
          f"{'start-up CPU s':>14s} {'warm-up CPU s':>13s}")
    for name, (started, warmed, *measured) in runs.items():
        best = min((d for _, d, _ in measured), key=lambda d: d["cpu"])
        start = "-" if started is None else f"{started['cpu']:.2f}"
        print(f"{name:34s} {best['cpu']:6.2f} {1000 * best['cpu'] / n:7.0f} {best['sys']:6.2f} {best['thread']:8.2f} "
              f"{best['faults']:8.0f} {best['cpu'] / base:12.2f}x {start:>14s} {warmed['cpu']:13.2f}")
    same = len({round(e, 6) for es in energies.values() for e in es}) == 1
    print(f"identical energies everywhere: {same}")
    for name, value in idle.items():
        print(f"idle 2-worker cluster, {name}: {value:.3f} CPU-s per second")


if __name__ == "__main__":
    main()
