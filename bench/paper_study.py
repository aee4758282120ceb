"""The core paper's experiment (Klhufek et al. 2024) beside quantloop's own protocol, on the digits MobileNets.

Protocols (per network × target):
  paper  the configuration of the paper's code: targets eyeriss_paper / simba_paper (16-bit words, fixed MAC
         energy), objective EDP, NSGA-II with 10 individuals and 25 generations, seed 0, then QAT of the front
         (`--accuracy qat`; the paper QATs every candidate for 10 epochs, which this does not do: see README).
  own    quantloop's defaults: targets eyeriss / simba, objective energy, its default NSGA-II settings, QAT
         of the front as above.
Each run is one search (`cosearch.search_model`), which yields the PTQ choice and the QAT choice. Printed
per run: energy and EDP saved against uniform w8a8 with PTQ and with QAT (the choice keeps validation top-1
within 0.5 pp of float; test top-1 drop printed beside), the decomposition of the QAT choice's saving
(MAC energy, packing with the w8a8 mapping kept, re-mapping warm-started from it, mapper seed noise),
search time, and the number of mapper and accuracy evaluations. The mapper cache is the user's (or
QUANTLOOP_CACHE_DIR), so a rerun is fast.

    python bench/paper_study.py [--networks mobilenet_v1_digits mobilenet_v2_digits] [--protocols paper own]
        [--qat-epochs 2]
"""

from __future__ import annotations

import argparse
import sys
import time

PROTOCOLS = {
    "paper": {"targets": ("eyeriss_paper", "simba_paper"), "objective": "edp", "population": 10, "generations": 25},
    "own": {"targets": ("eyeriss", "simba"), "objective": "energy", "population": None, "generations": None},
}


def run(network: str, protocol: str, target: str, args) -> None:
    from quantloop.cosearch import search_model
    from quantloop.options import CompileOptions, SearchSettings

    spec = PROTOCOLS[protocol]
    settings = SearchSettings(progress=False, accuracy="qat", qat_epochs=args.qat_epochs, seed=args.seed)
    if spec["population"]:
        settings = SearchSettings(progress=False, accuracy="qat", qat_epochs=args.qat_epochs, seed=args.seed,
                                  population=spec["population"], generations=spec["generations"])
    options = CompileOptions(target=target, objective=spec["objective"], search=settings)
    started = time.perf_counter()
    searched = search_model(f"zoo:{network}", options)
    seconds = time.perf_counter() - started
    doc, result = searched.document, searched.result
    ref = doc["reference_w8a8"]
    test = doc.get("test") or {}
    print(f"\n== {network} on {target} ({protocol}: objective {spec['objective']}, population "
          f"{doc['search']['population']}, generations {doc['search']['generations']}, QAT {args.qat_epochs} epoch(s))")
    print(f"float top-1 test {100 * test.get('float_accuracy', float('nan')):.2f} %, w8a8 test "
          f"{100 * test.get('w8a8_accuracy', float('nan')):.2f} %")
    if doc.get("chosen") is not None:
        chosen = doc["points"][doc["chosen"]]
        drop = 100 * (test["float_accuracy"] - test["chosen_accuracy"])
        print(f"PTQ  {chosen['label']:6s} energy saved {100 * (1 - chosen['energy_pj'] / ref['energy_pj']):5.1f} %   EDP saved "
              f"{100 * (1 - chosen['energy_pj'] * chosen['cycles'] / (ref['energy_pj'] * ref['cycles'])):5.1f} %   "
              f"test drop {drop:+.2f} pp")
    else:
        print("PTQ  no point within 0.5 pp")
    qat = doc["qat"]
    if qat["chosen"] is not None:
        c = qat["chosen"]
        drop = 100 * (test["float_accuracy"] - c["test_accuracy"]) if "test_accuracy" in c else float("nan")
        print(f"QAT  {c['label']:6s} energy saved {100 * c['saving_vs_w8a8']['energy']:5.1f} %   EDP saved "
              f"{100 * c['saving_vs_w8a8']['edp']:5.1f} %   test drop {drop:+.2f} pp   ({len(qat['tried'])} front point(s) fine-tuned)")
        from quantloop.passes.search.synergy import summary_lines

        for line in summary_lines(qat["synergy"])[:3]:
            print("     " + line)
        dram = next(t for t in qat["synergy"]["traffic"] if t["level"] == "DRAM")
        print(f"     DRAM words: kept mapping {dram['kept_words']:,.0f}, re-mapped {dram['remapped_words']:,.0f}, "
              f"compulsory {dram['compulsory_words']:,.0f}")
    else:
        print(f"QAT  no front point within 0.5 pp after fine-tuning ({len(qat['tried'])} tried)")
    print(f"search {seconds:.1f} s; mapper: {result.mapper.lookups} lookups, {result.mapper.mapped} mapped; accuracy: "
          f"{result.accuracy_stats.lookups} lookups, {result.accuracy_stats.evaluated} evaluated; "
          f"{len(qat['tried'])} QAT fine-tunings", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["mobilenet_v1_digits", "mobilenet_v2_digits"])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for protocol in args.protocols:
        for network in args.networks:
            for target in PROTOCOLS[protocol]["targets"]:
                run(network, protocol, target, args)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
