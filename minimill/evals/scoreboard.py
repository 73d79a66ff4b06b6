"""The scoreboard: per model and suite, accuracy with its interval, tokens, latency and cost; and the
choice of the default model (quality first: the cheapest within a ratio of the best)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean

from minimill.evals.results import ItemResult
from minimill.evals.stats import wilson_interval


@dataclass(frozen=True, slots=True)
class SuiteScore:
    """One model on one suite version: mean score, its 95% interval, and per-item means."""

    model: str
    suite: str
    version: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    prompt_tokens: float
    completion_tokens: float
    latency_s: float
    cost_usd: float  # mean per item
    errors: int

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> SuiteScore:
        """Aggregate the results of one (model, suite, version)."""
        first = results[0]
        accuracy = fmean(r.score for r in results)
        low, high = wilson_interval(accuracy, len(results))
        return cls(model=first.model, suite=first.suite, version=first.version, n=len(results), accuracy=accuracy,
                   ci_low=low, ci_high=high, prompt_tokens=fmean(r.prompt_tokens for r in results),
                   completion_tokens=fmean(r.completion_tokens for r in results),
                   latency_s=fmean(r.latency_s for r in results), cost_usd=fmean(r.cost_usd for r in results),
                   errors=sum(r.error is not None for r in results))


@dataclass(frozen=True, slots=True)
class ModelScore:
    """A model over every suite it was measured on: mean quality (macro over suites), mean cost per
    item, and quality per dollar."""

    model: str
    suites: dict[str, SuiteScore] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        """Mean accuracy over suites, each suite weighing the same."""
        return fmean(s.accuracy for s in self.suites.values()) if self.suites else 0.0

    @property
    def cost_per_item(self) -> float:
        """Mean USD per item over suites."""
        return fmean(s.cost_usd for s in self.suites.values()) if self.suites else 0.0

    @property
    def latency_s(self) -> float:
        """Mean seconds per item over suites."""
        return fmean(s.latency_s for s in self.suites.values()) if self.suites else 0.0

    @property
    def value(self) -> float:
        """Quality per dollar (per item); infinite for a free model with any quality."""
        if self.cost_per_item <= 0:
            return float("inf") if self.quality > 0 else 0.0
        return self.quality / self.cost_per_item

    def on(self, suites: set[str]) -> ModelScore:
        """The same model measured on `suites` only (all of its suites when empty)."""
        return ModelScore(self.model, {k: v for k, v in self.suites.items() if not suites or k in suites})

    def as_dict(self) -> dict[str, object]:
        """JSON for `/v1/models` and `/v1/evals`."""
        return {"quality": round(self.quality, 4), "cost_per_item_usd": self.cost_per_item,
                "latency_s": round(self.latency_s, 4), "quality_per_usd": self.value if self.cost_per_item else None,
                "suites": {name: {"version": s.version, "n": s.n, "accuracy": round(s.accuracy, 4),
                                  "ci95": [round(s.ci_low, 4), round(s.ci_high, 4)],
                                  "prompt_tokens": round(s.prompt_tokens, 1),
                                  "completion_tokens": round(s.completion_tokens, 1),
                                  "latency_s": round(s.latency_s, 4), "cost_per_item_usd": s.cost_usd,
                                  "errors": s.errors}
                           for name, s in sorted(self.suites.items())}}


@dataclass(frozen=True, slots=True)
class DefaultChoice:
    """Which model `default` means and why, in words."""

    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Scoreboard:
    """Every model's scores on one item split; the newest suite version a model has results for counts."""

    models: dict[str, ModelScore]

    @classmethod
    def build(cls, results: Iterable[ItemResult]) -> Scoreboard:
        """Aggregate item results (any mix of models, suites and versions)."""
        groups: dict[tuple[str, str, str], list[ItemResult]] = defaultdict(list)
        for r in results:
            groups[(r.model, r.suite, r.version)].append(r)
        models: dict[str, ModelScore] = {}
        for (model, suite, _), items in sorted(groups.items(), key=lambda kv: _version_key(kv[0][2])):
            models.setdefault(model, ModelScore(model)).suites[suite] = SuiteScore.of(items)  # newest wins
        return cls(models)

    def accuracy(self, model: str, suite: str) -> float | None:
        """A model's accuracy on one suite, if measured."""
        score = self.models.get(model)
        entry = score.suites.get(suite) if score else None
        return entry.accuracy if entry else None

    def choose_default(self, candidates: Sequence[str], *, ratio: float, override: str | None = None) -> DefaultChoice:
        """Quality first: the cheapest candidate (by measured cost per item) whose mean quality is at least
        `ratio` x the best candidate's; the override when one is configured; the first candidate when none
        is measured. Models are compared on the suites all of them were measured on (one easy suite must
        not win it)."""
        if override is not None:
            return DefaultChoice(override, "set by configuration (--default-model)")
        measured = [self.models[m].on(set()) for m in candidates if m in self.models and self.models[m].suites]
        if not measured:
            return DefaultChoice(candidates[0], "no eval results yet: the first served model")
        common = set.intersection(*(set(m.suites) for m in measured))
        if common:
            measured = [m.on(common) for m in measured]
        best = max(measured, key=lambda m: m.quality)
        good = [m for m in measured if m.quality >= ratio * best.quality]
        chosen = min(good, key=lambda m: (m.cost_per_item, -m.quality))
        return DefaultChoice(chosen.model, f"the cheapest model within {ratio:.0%} of the best quality "
                                           f"({best.model}, {best.quality:.3f}): quality {chosen.quality:.3f} over "
                                           f"{len(chosen.suites)} suites at ${chosen.cost_per_item:.3g} per item")


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)
