"""Hardware and model co-exploration (`quantloop explore`): sweep target parameters × bit-widths,
compile every design point, keep the Pareto front over energy, latency, area and accuracy."""
