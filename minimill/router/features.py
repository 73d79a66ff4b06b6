"""What a request is: its task type (given in `metadata.task`, implied by a JSON schema, or detected from
its words by each suite's keywords) — the key the router looks up in the scoreboard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from minimill.evals.suite import Suite


def detect_task(text: str, *, metadata: Mapping[str, Any] | None, response_format: Mapping[str, Any] | None,
                suites: Sequence[Suite], tools: bool = False) -> str | None:
    """The task type: `metadata.task` when it names a suite; "tools" for a request offering tools;
    "extraction" for a JSON-schema answer; else the suite whose keywords occur most often in `text` (None:
    no keyword, or a tie)."""
    names = {suite.name for suite in suites}
    given = (metadata or {}).get("task")
    if isinstance(given, str) and given in names:
        return given
    if tools and "tools" in names:
        return "tools"
    if (response_format or {}).get("type") == "json_schema" and "extraction" in names:
        return "extraction"
    lowered = text.lower()
    hits = sorted(((sum(lowered.count(k) for k in suite.keywords), suite.name) for suite in suites), reverse=True)
    if not hits or hits[0][0] == 0 or (len(hits) > 1 and hits[1][0] == hits[0][0]):
        return None
    return hits[0][1]
