"""On-disk cache of mapper results: one small JSON file per (layer, bits, target, objective, version).

Location: `--cache-dir` > `QUANTLOOP_CACHE_DIR` > platformdirs `user_cache_dir("quantloop")`, in a
`mapper/` sub-folder. Entries are written atomically (temporary file + `os.replace`), so concurrent
workers never read half a file; an unreadable entry is treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

ENV_VAR = "QUANTLOOP_CACHE_DIR"


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("quantloop"))


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `parts` (sorted keys, no whitespace)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class MapCache:
    """A folder of `<key>.json` entries (`folder` under the cache root: other on-disk caches reuse this class)."""

    def __init__(self, root: str | os.PathLike | None = None, folder: str = "mapper") -> None:
        self.root = (Path(root) if root is not None else default_cache_dir()) / folder

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            with open(self.path(key), encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or "value" not in entry:
            return None
        return entry["value"]

    def put(self, key: str, value: dict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "value": value}, f, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
