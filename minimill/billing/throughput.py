"""Measured throughput per model file: what a local model's prices are computed from.

`minimill calibrate` (and `serve`, for a model file never measured) stores each model file's prefill and
decode tokens per second on this host in `<data dir>/throughput.json`, keyed by the file's SHA-256. The
package ships the figures measured on the reference machine (bench/RESULTS.md) for the catalogue's
files, so a fresh install prices them by measurement before it calibrates anything; its own
measurements take over as soon as they exist.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from minimill.durable import write_atomically

PUBLISHED = Path(__file__).parent / "throughput.json"


@dataclass(frozen=True, slots=True)
class Throughput:
    """One model file on one host: tokens per second of prefill and of busy decode, KV bytes per token."""

    model: str
    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    kv_bytes_per_token: int
    threads: int
    measured_at: str
    host: str


class ThroughputStore:
    """Measurements by model file digest, in one JSON file (rewritten atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def get(self, digest: str) -> Throughput | None:
        """The measurement of the file with this SHA-256, if any (a malformed entry counts as none)."""
        entry = self._read().get(digest)
        try:
            return Throughput(**entry) if isinstance(entry, dict) else None  # type: ignore[arg-type]
        except TypeError:
            return None

    def put(self, digest: str, found: Throughput) -> None:
        """Record (or replace) the measurement of one file."""
        entries = self._read()
        entries[digest] = asdict(found)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, (json.dumps(entries, indent=1, sort_keys=True) + "\n").encode())


def measured(digest: str, own: ThroughputStore, published: ThroughputStore | None = None) -> Throughput | None:
    """This host's measurement of a file, else the published one, else None."""
    return own.get(digest) or (published or ThroughputStore(PUBLISHED)).get(digest)
