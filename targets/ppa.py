"""Energy, latency, area and performance per area of one run of a network on a target: their one home.

Latency is the sum of the layers' cycles (layers run one after another) through the array's clock
(`compute.clock_mhz`); area is `targets/area.py`'s total. Performance per area follows QUIDAM (paper
004): throughput per mm², here MACs per second per mm² (GMAC/s/mm²), so designs with different PE
types and array sizes compare on one scale. Any figure whose input the target does not declare is None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from quantloop.targets.arch import Arch
from quantloop.targets.area import target_area


@dataclass(frozen=True)
class PPA:
    energy_pj: float
    cycles: int
    macs: int
    latency_s: float | None
    area_mm2: float | None
    clock_mhz: float | None
    pe_type: str | None

    @property
    def perf_per_area(self) -> float | None:
        """GMAC/s per mm² (None without a clock or a complete area)."""
        if not self.latency_s or not self.area_mm2:
            return None
        return self.macs / self.latency_s / 1e9 / self.area_mm2

    def to_json(self) -> dict:
        return {**asdict(self), "perf_per_area_gmacs_per_mm2": self.perf_per_area}

    def summary(self) -> str:
        """One line: energy, latency, area, performance per area."""
        latency = "n/a" if self.latency_s is None else f"{self.latency_s * 1e3:,.4g} ms at {self.clock_mhz:g} MHz"
        area = "n/a" if self.area_mm2 is None else f"{self.area_mm2:,.4g} mm²"
        ppa = "n/a" if self.perf_per_area is None else f"{self.perf_per_area:,.4g} GMAC/s/mm²"
        pe = f" ({self.pe_type} PEs)" if self.pe_type else ""
        return f"energy {self.energy_pj / 1e6:,.4g} µJ, latency {latency}, area {area}{pe}, performance per area {ppa}"


def ppa(arch: Arch, energy_pj: float, cycles: int, macs: int) -> PPA:
    return PPA(energy_pj=float(energy_pj), cycles=int(cycles), macs=int(macs), latency_s=arch.seconds(cycles),
               area_mm2=target_area(arch).total_mm2, clock_mhz=arch.compute.clock_mhz, pe_type=arch.compute.pe_type)
