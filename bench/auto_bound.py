"""Issue 14: how cheap can `auto` be on this ladder? Bounds from the published per-item results (tune split).

    python -m bench.auto_bound --small qwen2.5-coder-0.5b --large qwen2.5-coder-1.5b

Every figure is relative to always-large (quality: mean over suites of the mean item score; cost: summed
`usage.cost` of the items). Three policies, each with perfect knowledge no real router has, so each is a bound:
- `oracle cascade`: the small model answers every item; exactly the items it gets wrong go to the large one
  (both are paid for those, as a cascade pays).
- `best per suite`: per suite, the cheapest of {small, oracle cascade, large} whose quality is at least
  `--target` of the large model's on that suite.
- `oracle router`: one model per item, known in advance (no cascade pays twice): the small one where it is
  right, the large one elsewhere. No router choosing between these two models can do better.
- `oracle router, every model`: the same over every published model: per item the cheapest one that scores
  as well as the large one.
- `..., to 0.95`: the same policies allowed to give up quality down to `--target` of the large model's, the
  most money saved per quality lost first (greedy): what the issue's goal permits.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

PUBLISHED = Path(__file__).resolve().parents[1] / "minimill" / "evals" / "published"

Items = dict[str, dict[str, tuple[float, float]]]  # suite -> item id -> (score, cost)


def load(model: str, seed: int) -> Items:
    """A model's published items of the tune split: score and cost per item, by suite."""
    items: Items = defaultdict(dict)
    for path in sorted((PUBLISHED / model).glob(f"*-s{seed}.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            items[row["suite"]][row["item_id"]] = (float(row["score"]), float(row["cost_usd"] or 0.0))
    return items


def quality(per_suite: dict[str, list[float]]) -> float:
    """Mean over suites of the mean score (every suite weighs the same, as on the scoreboard)."""
    return sum(sum(s) / len(s) for s in per_suite.values()) / len(per_suite)


def cheapest_escalations(small: Items, large: Items, target: float, cascade: bool) -> tuple[float, float]:
    """Quality and cost, relative to always-large, of answering every item with the small model and sending
    to the large one the items that gain the most quality per dollar, until quality reaches `target`: the
    items are known in advance. `cascade`: the small model's answer is paid for the sent items too."""
    suites = sorted(set(small) & set(large))
    scores = {suite: {i: small[suite][i][0] for i in set(small[suite]) & set(large[suite])} for suite in suites}
    base = {suite: [large[suite][i][0] for i in items] for suite, items in scores.items()}
    full = quality(base)
    cost = sum(small[suite][i][1] for suite, items in scores.items() for i in items)
    base_cost = sum(large[suite][i][1] for suite, items in scores.items() for i in items)
    weight = {suite: 1 / (len(suites) * len(items)) for suite, items in scores.items()}
    moves = [(suite, i, (large[suite][i][0] - small[suite][i][0]) * weight[suite],
              large[suite][i][1] - (0.0 if cascade else small[suite][i][1]))
             for suite, items in scores.items() for i in items if large[suite][i][0] > small[suite][i][0]]
    for suite, i, _gain, extra in sorted(moves, key=lambda m: -m[2] / max(m[3], 1e-12)):
        if quality({k: list(v.values()) for k, v in scores.items()}) / full >= target:
            break
        scores[suite][i], cost = large[suite][i][0], cost + extra
    return quality({k: list(v.values()) for k, v in scores.items()}) / full, cost / base_cost


def every_model_oracle(large: str, seed: int, target: float = 1.0) -> tuple[float, float]:
    """Quality and cost, relative to always-large, of picking per item the cheapest published model that
    scores at least as well as `large` on it; with `target` < 1, then giving items up to cheaper models, the
    most money saved per quality lost first, while quality stays at or above `target` (a greedy knapsack)."""
    data = {path.name: load(path.name, seed) for path in sorted(PUBLISHED.iterdir()) if path.is_dir()}
    suites = sorted(set.intersection(*(set(items) for items in data.values())))
    chosen: dict[str, list[float]] = {}
    base: dict[str, list[float]] = {}
    cost = base_cost = 0.0
    trades: list[tuple[str, int, float, float, float]] = []  # suite, index, money saved, score lost, new score
    for suite in suites:
        for item in sorted(set.intersection(*(set(items[suite]) for items in data.values()))):
            goal, large_cost = data[large][suite][item]
            price, score = min((items[suite][item][1], items[suite][item][0]) for items in data.values()
                               if items[suite][item][0] >= goal)
            chosen.setdefault(suite, []).append(score)
            base.setdefault(suite, []).append(goal)
            cost, base_cost = cost + price, base_cost + large_cost
            cheapest = min((items[suite][item][1], items[suite][item][0]) for items in data.values())
            if cheapest[0] < price:
                trades.append((suite, len(chosen[suite]) - 1, price - cheapest[0], score - cheapest[1], cheapest[1]))
    full = quality(base)
    weight = {suite: 1 / (len(suites) * len(scores)) for suite, scores in chosen.items()}  # an item's share
    lost = 0.0
    for suite, index, saved, loss, score in sorted(trades, key=lambda t: -t[2] / max(t[3] * weight[t[0]], 1e-12)):
        if (quality(chosen) - loss * weight[suite]) / full < target:
            continue
        chosen[suite][index], cost, lost = score, cost - saved, lost + loss * weight[suite]
    return quality(chosen) / full, cost / base_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", default="qwen2.5-coder-0.5b")
    parser.add_argument("--large", default="qwen2.5-coder-1.5b")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=float, default=0.95, help="quality to reach, as a share of the large's")
    args = parser.parse_args()
    small, large = load(args.small, args.seed), load(args.large, args.seed)
    suites = sorted(set(small) & set(large))
    policies: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for suite in suites:
        for item in sorted(set(small[suite]) & set(large[suite])):
            (s_score, s_cost), (l_score, l_cost) = small[suite][item], large[suite][item]
            policies["always small"][suite].append((s_score, s_cost))
            policies["always large"][suite].append((l_score, l_cost))
            escalated = s_score < 1.0
            policies["oracle cascade"][suite].append((l_score if escalated else s_score,
                                                      s_cost + (l_cost if escalated else 0.0)))
            policies["oracle router"][suite].append((l_score, l_cost) if escalated else (s_score, s_cost))
    for suite in suites:  # per suite, the cheapest policy that keeps the target there
        goal = args.target * sum(s for s, _ in policies["always large"][suite]) / len(policies["always large"][suite])
        options = [policies[name][suite] for name in ("always small", "oracle cascade", "always large")]
        fits = [o for o in options if sum(s for s, _ in o) / len(o) >= goal - 1e-12]
        policies["best per suite"][suite] = min(fits, key=lambda o: sum(c for _, c in o))
    base_q = quality({k: [s for s, _ in v] for k, v in policies["always large"].items()})
    base_c = sum(c for v in policies["always large"].values() for _, c in v)
    print(f"{args.small} -> {args.large}, tune split (seed {args.seed}), {len(suites)} suites; "
          f"relative to always-large (quality {base_q:.3f}, cost ${base_c:.4f})")
    print("| policy | quality / large | cost / large |")
    print("|---|---|---|")
    for name in ("always small", "oracle cascade", "best per suite", "oracle router"):
        per = policies[name]
        q = quality({k: [s for s, _ in v] for k, v in per.items()})
        c = sum(cost for v in per.values() for _, cost in v)
        print(f"| {name} | {q / base_q:.3f} | {c / base_c:.3f} |")
    for cascade in (True, False):
        q, c = cheapest_escalations(small, large, args.target, cascade)
        name = "oracle cascade" if cascade else "oracle router"
        print(f"| {name}, only the most valuable items sent up, to {args.target:g} | {q:.3f} | {c:.3f} |")
    q, c = every_model_oracle(args.large, args.seed)
    print(f"| oracle router, every model | {q:.3f} | {c:.3f} |")
    q, c = every_model_oracle(args.large, args.seed, args.target)
    print(f"| oracle router, every model, down to {args.target:g} of the quality | {q:.3f} | {c:.3f} |")


if __name__ == "__main__":
    main()
