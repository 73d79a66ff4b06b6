"""Per-item eval results, appended to JSONL files in the data directory so a run can be resumed.

One file per (model, suite, suite version, seed): `<root>/<model>/<suite>-v<version>-s<seed>.jsonl`.
Appends are flushed line by line; a line cut short by a crash is ignored on reading (that item just
runs again).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ItemResult:
    """How one model did on one item: its score, answer, tokens, latency and cost. `answered_by` is the
    model that actually answered (differs from `model` for "auto"); `error` is set when the endpoint
    refused the request (scored 0)."""

    model: str
    suite: str
    version: str
    seed: int
    item_id: str
    score: float
    answer: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    answered_by: str | None = None
    error: str | None = None
    mean_logprob: float | None = None  # the answer's mean token log-probability: what auto's thresholds tune on


def _safe(name: str) -> str:
    """A model name (maybe a path or URL-ish id) as one directory name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


# The scoreboard published with the package (`minimill eval` on the catalogue, see bench/RESULTS.md), so a
# fresh install's `default` and `auto` are the evaluated ones before the user runs any eval.
PUBLISHED = Path(__file__).parent / "published"


def prefer_own(own: Iterable[ItemResult], published: Iterable[ItemResult]) -> list[ItemResult]:
    """`own` results, plus the published ones of every model `own` has none for: a model's own results
    take over as soon as any exist."""
    mine = list(own)
    measured = {r.model for r in mine}
    return mine + [r for r in published if r.model not in measured]


class ResultStore:
    """The eval results under one directory (`<data-dir>/evals/results`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, model: str, suite: str, version: str, seed: int) -> Path:
        """The file holding one (model, suite, version, seed)'s results."""
        return self.root / _safe(model) / f"{suite}-v{version}-s{seed}.jsonl"

    def done(self, model: str, suite: str, version: str, seed: int) -> dict[str, ItemResult]:
        """Results already recorded, by item id (what a resumed run skips)."""
        return {r.item_id: r for r in _read(self.path(model, suite, version, seed))}

    def append(self, result: ItemResult) -> None:
        """Record one result (one JSON line, flushed)."""
        path = self.path(result.model, result.suite, result.version, result.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
            out.flush()

    def all(self, seed: int | None = None) -> list[ItemResult]:
        """Every recorded result (of one seed, if given); the last record of an item wins."""
        latest: dict[tuple[str, str, str, int, str], ItemResult] = {}
        for path in sorted(self.root.glob("*/*.jsonl")):
            for r in _read(path):
                if seed is None or r.seed == seed:
                    latest[(r.model, r.suite, r.version, r.seed, r.item_id)] = r
        return list(latest.values())

    def stamp(self) -> float:
        """A value that changes whenever results are added (newest file modification time)."""
        return max((p.stat().st_mtime for p in self.root.glob("*/*.jsonl")), default=0.0)


def _read(path: Path) -> Iterator[ItemResult]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                yield ItemResult(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut short by a crash: that item runs again
