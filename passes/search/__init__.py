"""The engine of `qnn-search-bits` (the pass itself is `quantloop.passes.search_bits`).

`space` (which bits a candidate sets on which tensor, and its bits file), `fakequant` (one
onnxruntime session that evaluates any candidate's exact fake-quant network), `objectives`
(energy through the mapper and its cache, packed weight memory), `nsga` (pymoo NSGA-II) and
`engine` (the search from a module to a Pareto front).
"""
