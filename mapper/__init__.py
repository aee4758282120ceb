"""The CP-SAT-checked mapper: the best mapping of a layer on a target under the exact cost model.

Public API: `map_layer`, `map_layers`, `MapResult`, `MapCache`, `Budget`, `OBJECTIVES`.
"""

from quantloop.mapper.api import MAPPER_VERSION, MapResult, map_layer, map_layers
from quantloop.mapper.cache import MapCache
from quantloop.mapper.search import OBJECTIVES, Budget

__all__ = ["MAPPER_VERSION", "MapResult", "map_layer", "map_layers", "MapCache", "OBJECTIVES", "Budget"]
