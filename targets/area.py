"""The area model: a target's silicon area per level and in total.

Every storage level and the MAC declare the area of ONE instance in µm² (`area_um2`, Accelergy's
ART unit); a level's area is that × its instances. Timeloop's dummy spatial levels have no area
of their own (Accelergy gives them a 1 µm² placeholder), so they are not counted. This is the one
place area is computed: hardware co-exploration trades it against energy and latency.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantloop.targets.arch import Arch

UM2_PER_MM2 = 1e6


@dataclass(frozen=True)
class AreaBreakdown:
    """mm² per storage level (all instances) and for the MAC array; None where not declared."""

    levels: dict[str, float | None]
    compute: float | None

    @property
    def complete(self) -> bool:
        return self.compute is not None and all(v is not None for v in self.levels.values())

    @property
    def total_mm2(self) -> float | None:
        """Total mm², or None when any part is not declared (a partial sum would mislead)."""
        if not self.complete:
            return None
        return sum(self.levels.values()) + self.compute  # type: ignore[arg-type]

    def to_json(self) -> dict:
        return {"levels_mm2": dict(self.levels), "compute_mm2": self.compute, "total_mm2": self.total_mm2}


def target_area(arch: Arch) -> AreaBreakdown:
    def mm2(per_instance: float | None, instances: int) -> float | None:
        return None if per_instance is None else per_instance * instances / UM2_PER_MM2

    return AreaBreakdown(
        levels={lvl.name: mm2(lvl.area_um2, lvl.instances) for lvl in arch.levels},
        compute=mm2(arch.compute.area_um2, arch.compute.instances),
    )


def format_mm2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g} mm²"
