"""The router: `default` (the scoreboard's best value) and `auto` (per request, the cheapest model expected
to pass, then a cascade of better models to escalate to)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from minimill.config import RoutingConfig
from minimill.evals.results import ItemResult, ResultStore
from minimill.evals.scoreboard import DefaultChoice, Scoreboard
from minimill.evals.suite import TUNE_SEED


@dataclass(frozen=True, slots=True)
class Route:
    """The models to try, in order (the first answers unless its check fails), and why."""

    task: str | None
    cascade: tuple[str, ...]
    reason: str


class Router:
    """Reads the scoreboard (re-read when new eval results appear) of the models served here.

    `models` are the served ids; `list_price(model)` is a model's USD per 1M tokens (input + output),
    used to order models that have no measured cost per item.
    """

    def __init__(self, store: ResultStore, config: RoutingConfig, models: Sequence[str],
                 list_price: Callable[[str], float]) -> None:
        self.store = store
        self.config = config
        self.models = tuple(models)
        self._list_price = list_price
        self._board: Scoreboard | None = None
        self._stamp = -1.0

    def scoreboard(self) -> Scoreboard:
        """The scoreboard of the tuning split, for the models served here. Each call stats the result files
        (one per model and suite: well under a millisecond) and reads them again only when they changed."""
        stamp = self.store.stamp()
        if self._board is None or stamp != self._stamp:
            results: list[ItemResult] = [r for r in self.store.all(seed=TUNE_SEED) if r.model in self.models]
            self._board, self._stamp = Scoreboard.build(results), stamp
        return self._board

    def default(self) -> DefaultChoice:
        """The model `default` resolves to, and why."""
        return self.scoreboard().choose_default(self.models, floor=self.config.quality_floor,
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
        start = next(i for i, (_, a) in enumerate(scored) if a >= self.config.good_enough * best)
        cascade = [scored[start]]
        for model, a in scored[start + 1:]:
            if a > cascade[-1][1]:
                cascade.append((model, a))
        what = f"task {task}" if task else "all tasks"
        return Route(task, tuple(m for m, _ in cascade),
                     f"{cascade[0][0]} scores {cascade[0][1]:.2f} on {what} (best {best:.2f}); "
                     f"escalates to {', '.join(m for m, _ in cascade[1:]) or 'nothing'}")
