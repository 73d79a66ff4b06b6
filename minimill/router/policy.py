"""The router: `default` (the scoreboard's cheapest model near the best quality) and `auto` (per request,
the cheapest model expected to pass, then a cascade of better models to escalate to)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from minimill.config import RoutingConfig
from minimill.evals.results import PUBLISHED, ItemResult, ResultStore, prefer_own
from minimill.evals.scoreboard import DefaultChoice, Scoreboard
from minimill.evals.suite import TUNE_SEED


@dataclass(frozen=True, slots=True)
class Route:
    """The models to try, in order (the first answers unless its check fails), and why."""

    task: str | None
    cascade: tuple[str, ...]
    reason: str
    # the mean log-probability below which the first model's answer escalates, tuned on the tune split
    min_confidence: float | None = None


def tune_threshold(small: Sequence[ItemResult], large: Sequence[ItemResult], target: float) -> float | None:
    """The confidence threshold for escalating from `small` to `large` on one task, from their results on
    the same items: the lowest threshold (fewest escalations) at which answering with `small` when its mean
    log-probability reaches it, and with `large` otherwise, scores at least `target` x `large` alone.
    -inf: `small` alone is good enough; +inf: always escalate; None: too few shared items to tell."""
    by_id = {r.item_id: r for r in large}
    pairs = [(s.mean_logprob if s.mean_logprob is not None else -math.inf, s.score, by_id[s.item_id].score)
             for s in small if s.item_id in by_id]
    if len(pairs) < 5:
        return None
    goal = target * fmean(big for _, _, big in pairs)
    for threshold in [-math.inf, *sorted({conf for conf, _, _ in pairs})]:
        # escalate the answers whose confidence is below the threshold
        quality = fmean(big if conf < threshold else mine for conf, mine, big in pairs)
        if quality >= goal - 1e-12:
            return threshold
    return math.inf


def cascade_saves(small: Sequence[ItemResult], large: Sequence[ItemResult], threshold: float,
                  list_prices: tuple[float, float]) -> bool:
    """Whether answering with `small`, escalating its answers below `threshold` to `large`, costs less than
    `large` alone on the items both answered. Every escalated item is paid twice, so a small model that is
    not much cheaper, or whose answers mostly escalate, is worth skipping. Measured cost per item when both
    have it, else the models' list prices (`list_prices`: small, large)."""
    by_id = {r.item_id: r for r in large}
    pairs = [(s, by_id[s.item_id]) for s in small if s.item_id in by_id]
    if not pairs:
        return False
    measured = all(s.cost_usd > 0 and b.cost_usd > 0 for s, b in pairs)
    cheap, dear = list_prices

    def escalates(r: ItemResult) -> bool:
        return (r.mean_logprob if r.mean_logprob is not None else -math.inf) < threshold

    if measured:
        return sum(s.cost_usd + (b.cost_usd if escalates(s) else 0.0) for s, b in pairs) < sum(
            b.cost_usd for _, b in pairs)
    return cheap + dear * fmean(escalates(s) for s, _ in pairs) < dear


class Router:
    """Reads the scoreboard (re-read when new eval results appear) of the models served here.

    `models` are the served ids; `list_price(model)` is a model's USD per 1M tokens (input + output),
    used to order models that have no measured cost per item. A model with no results in `store` is
    scored by the `published` ones (the scoreboard shipped with the package) until it has its own.
    """

    def __init__(self, store: ResultStore, config: RoutingConfig, models: Sequence[str],
                 list_price: Callable[[str], float], published: ResultStore | None = None) -> None:
        self.store = store
        self.published = published if published is not None else ResultStore(PUBLISHED)
        self.config = config
        self.models = tuple(models)
        self._list_price = list_price
        self._board: Scoreboard | None = None
        self._results: list[ItemResult] = []
        self._stamp = -1.0

    def scoreboard(self) -> Scoreboard:
        """The scoreboard of the tuning split, for the models served here. Each call stats the result files
        (one per model and suite: well under a millisecond) and reads them again only when they changed."""
        stamp = self.store.stamp()
        if self._board is None or stamp != self._stamp:
            self._results = [r for r in prefer_own(self.store.all(seed=TUNE_SEED), self.published.all(seed=TUNE_SEED))
                             if r.model in self.models]
            self._board, self._stamp = Scoreboard.build(self._results), stamp
        return self._board

    def default(self) -> DefaultChoice:
        """The model `default` resolves to, and why."""
        return self.scoreboard().choose_default(self.models, ratio=self.config.default_quality_ratio,
                                                override=self.config.default_model)

    def by_price(self) -> list[str]:
        """Served models, cheapest first: by measured cost per eval item when every model has one, else by
        list price."""
        board = self.scoreboard()
        if all(m in board.models for m in self.models):
            return sorted(self.models, key=lambda m: (board.models[m].cost_per_item, self._list_price(m)))
        return sorted(self.models, key=self._list_price)

    def route(self, task: str | None) -> Route:
        """Start at the cheapest model whose accuracy on `task` (overall quality when the task is unknown)
        is within `good_enough` of the best; escalate only to dearer models that scored higher. Once any
        model has results, models without any are not routed to: evaluate a new model to bring it in."""
        board, ordered = self.scoreboard(), self.by_price()

        def accuracy(model: str) -> float | None:
            if task is not None and (found := board.accuracy(model, task)) is not None:
                return found
            score = board.models.get(model)
            return score.quality if score and score.suites else None

        scored = [(m, a) for m in ordered if (a := accuracy(m)) is not None]
        if not scored:
            return Route(task, tuple(ordered), "no eval results: cheapest first, escalating through every model")
        best = max(a for _, a in scored)
        if best <= 0:
            return Route(task, (scored[0][0],), "no model passes this task: the cheapest answers")
        top = max(scored, key=lambda pair: pair[1])[0]
        goal = self.config.good_enough * best
        # The cheapest model that is good enough alone, or whose confident answers are (the rest escalating to
        # the best model, at a threshold tuned on the tune split).
        start, threshold, lifted = len(scored) - 1, None, False
        for i, (model, a) in enumerate(scored):
            tuned = self._threshold(task, model, top) if model != top else None
            if a >= goal or (tuned is not None and tuned < math.inf):
                start, threshold, lifted = i, tuned, a < goal
                break
        cascade = [scored[start]]
        if lifted:  # good enough only with its unsure answers escalated to the model it was tuned against
            cascade.append((top, best))
        for model, a in scored[start + 1:]:
            if not lifted and a > cascade[-1][1]:
                cascade.append((model, a))
        what = f"task {task}" if task else "all tasks"
        models = tuple(m for m, _ in cascade)
        reason = (f"{cascade[0][0]} scores {cascade[0][1]:.2f} on {what} (best {best:.2f}); "
                  f"escalates to {', '.join(models[1:]) or 'nothing'}")
        if threshold is not None and math.isfinite(threshold) and len(models) > 1:
            reason += f" below mean log-probability {threshold:.3f} (tuned)"
            return Route(task, models, reason, threshold)
        return Route(task, models, reason)

    def _threshold(self, task: str | None, small: str, large: str) -> float | None:
        """The tuned confidence threshold for escalating from `small` to `large` on `task` (None: no task, or
        too little data: the configured `min_confidence` applies; +inf: `small` is not worth trying)."""
        if task is None:
            return None
        self.scoreboard()  # the tune split's results, re-read only when they changed
        results = [r for r in self._results if r.suite == task]
        mine, theirs = [r for r in results if r.model == small], [r for r in results if r.model == large]
        threshold = tune_threshold(mine, theirs, self.config.good_enough)
        if threshold is None or not math.isfinite(threshold):
            return threshold
        # a cascade that costs more than the large model alone is skipped (as if every answer escalated)
        prices = (self._list_price(small), self._list_price(large))
        return threshold if cascade_saves(mine, theirs, threshold, prices) else math.inf


def shipped_default(data_dir: Path, models: Sequence[str]) -> DefaultChoice:
    """What `default` means when `models` are served from `data_dir` with the default settings (for
    `minimill models`): the data dir's own eval results where they exist, the published ones elsewhere."""
    store = ResultStore(data_dir / "evals" / "results")
    return Router(store, RoutingConfig(), models, list_price=lambda model: 0.0).default()
