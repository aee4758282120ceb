"""On-disk cache of mapper results: one small JSON file per (layer, bits, target, objective, version).

Location: `--cache-dir` > `QUANTLOOP_CACHE_DIR` > platformdirs `user_cache_dir("quantloop")`, in a
`mapper/` sub-folder. Entries are written atomically (temporary file + `os.replace`), so concurrent
workers never read half a file; an unreadable entry is treated as a miss and rewritten. A cache that cannot be written is reported once
on stderr and bypassed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ENV_VAR = "QUANTLOOP_CACHE_DIR"
MAX_ENTRY_BYTES = 16 << 20
_BROKEN: set[Path] = set()  # cache folders that failed a write in this process (warned about once)


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
        self.base = Path(root) if root is not None else default_cache_dir()
        self.root = self.base / folder

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The value stored under `key`, or None: a missing, unreadable, oversized, non-regular or tampered entry
        (its checksum must match) is a miss, never an error."""
        from quantloop.errors import QuantloopError
        from quantloop.files import parse_json, read_bytes

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = parse_json(read_bytes(path, "cache entry", MAX_ENTRY_BYTES).decode("utf-8"), str(path))
        except (QuantloopError, UnicodeDecodeError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("value"), dict):
            return None
        if entry.get("sha256") != cache_key(entry["value"]):
            return None
        return entry["value"]

    def put(self, key: str, value: dict) -> None:
        """Store `value`; a cache that cannot be written (a file in the way, read-only, full disk) is reported
        once on stderr and bypassed: the compile goes on without it."""
        if self.base in _BROKEN:
            return
        try:
            self._write(key, value)
        except OSError as err:
            _BROKEN.add(self.base)
            where = self.base
            print(f"quantloop: warning: cache {where}: {err.strerror or err}; continuing without the cache",
                  file=sys.stderr)

    def _write(self, key: str, value: dict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "value": value, "sha256": cache_key(value)}, f, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
