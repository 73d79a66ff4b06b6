"""`minimill eval` end to end against a real minimill serving both bundled models; the scoreboard it
publishes (/v1/evals, /v1/models, `eval report`); `model: "default"` and `model: "auto"`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from minimill.evals.results import ItemResult, ResultStore
from minimill.evals.suite import TUNE_SEED
from minimill.evals.suites import ALL
from tests.api.conftest import Server, free_port, serve

MODELS = ["smollm2-135m", "gemma3-270m"]
ITEMS = 2


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("evals"), models=MODELS, kv_size=4096, max_seqs=8)


def minimill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minimill.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})


def test_eval_runs_every_suite_on_both_models_resumably_and_publishes_a_scoreboard(both: Server) -> None:
    data_dir = both.runtime.config.data_dir
    args = ("eval", "--items", str(ITEMS), "--base-url", f"{both.url}/v1", "--data-dir", str(data_dir))
    first = minimill(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"answered {len(MODELS) * len(ALL) * ITEMS}," in first.stdout
    again = minimill(*args)  # resumable: everything is recorded already
    assert again.returncode == 0 and f"answered 0, already recorded {len(MODELS) * len(ALL) * ITEMS}" in again.stdout

    store = ResultStore(data_dir / "evals" / "results")
    results = store.all(seed=TUNE_SEED)
    assert len(results) == len(MODELS) * len(ALL) * ITEMS
    # neither model's chat template has tools: the tools suite is a 400 for both, recorded as a 0
    refused = [r for r in results if r.error is not None]
    assert {r.suite for r in refused} == {"tools"} and len(refused) == len(MODELS) * ITEMS
    assert all("tools_not_supported" in (r.error or "") and r.score == 0.0 for r in refused)
    answered = [r for r in results if r.error is None]
    assert all(0.0 <= r.score <= 1.0 and r.answered_by == r.model for r in answered)
    assert all(r.cost_usd > 0 and r.completion_tokens > 0 for r in answered)
    cleaning = [r for r in results if r.suite == "cleaning"]
    assert all(r.prompt_tokens > 1000 for r in cleaning)  # the W1 instruction prefix is in every item

    board = httpx.get(f"{both.url}/v1/evals").json()
    assert set(board["models"]) == set(MODELS)
    for model in MODELS:
        suites = board["models"][model]["suites"]
        assert set(suites) == {s.name for s in ALL}
        for entry in suites.values():
            low, high = entry["ci95"]
            assert entry["n"] == ITEMS and low <= entry["accuracy"] <= high
        mine = [r.score for r in results if r.model == model]
        assert board["models"][model]["quality"] == pytest.approx(
            sum(sum(r.score for r in results if r.model == model and r.suite == s.name) / ITEMS for s in ALL)
            / len(ALL), abs=1e-4)
        assert len(mine) == len(ALL) * ITEMS
    cards = {m.id: m.model_extra or {} for m in both.client().models.list().data}
    assert cards["gemma3-270m"]["scores"]["quality"] == board["models"]["gemma3-270m"]["quality"]
    assert cards["gemma3-270m"]["prices"]["output"] > cards["smollm2-135m"]["prices"]["output"]  # bigger, dearer

    # default: the cheapest model whose quality is within 90% of the best, as the numbers say
    default, measured = board["default"]["model"], board["models"]
    best = max(measured[m]["quality"] for m in MODELS)
    eligible = [m for m in MODELS if measured[m]["quality"] >= 0.9 * best]
    expected = min(eligible, key=lambda m: (measured[m]["cost_per_item_usd"], -measured[m]["quality"]))
    assert default == expected
    reply = both.client().chat.completions.create(model="default", max_tokens=4,
                                                  messages=[{"role": "user", "content": "Hi"}])
    assert reply.model == default
    assert default in cards["default"]["description"]

    out = data_dir / "report"
    report = minimill("eval", "report", "--data-dir", str(data_dir), "--out", str(out))
    assert report.returncode == 0, report.stdout + report.stderr
    table = (out / "scoreboard.md").read_text()
    assert all(model in table for model in MODELS) and "cleaning" in table
    assert (out / "scoreboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot = httpx.get(f"{both.url}/v1/evals/plot.png")
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Both models, and a scoreboard on arithmetic where smollm2 is good enough but gemma scores higher."""
    data_dir = tmp_path_factory.mktemp("routed")
    store = ResultStore(data_dir / "evals" / "results")
    for model, scores, cost in (("smollm2-135m", [1, 1, 1, 1, 0], 1e-6), ("gemma3-270m", [1, 1, 1, 1, 1], 3e-6)):
        for i, score in enumerate(scores):
            store.append(ItemResult(model=model, suite="arithmetic", version="1", seed=TUNE_SEED,
                                    item_id=f"a-{i}", score=score, answer="", cost_usd=cost))
    yield from serve(data_dir, models=MODELS, kv_size=2048, max_seqs=4, good_enough=0.75, default_quality_ratio=0.75)


ARITHMETIC = [{"role": "user", "content": "What is 12 + 7? Answer with only the number."}]


def auto(server: Server, **extra: object) -> dict[str, object]:
    client = server.client()
    reply = client.chat.completions.create(model="auto", messages=ARITHMETIC, max_tokens=8, temperature=0,
                                           **extra)  # type: ignore[call-overload]
    return reply.model_dump()


def test_default_resolves_to_the_cheapest_model_near_the_best(routed: Server) -> None:
    # smollm2: 0.8 at 1e-6 USD, gemma: 1.0 at 3e-6 USD; 0.8 >= 0.75 x 1.0
    assert routed.runtime.router.default().model == "smollm2-135m"
    assert routed.client().chat.completions.create(model="default", messages=ARITHMETIC, max_tokens=4).model == \
        "smollm2-135m"


def test_auto_answers_with_the_cheap_model_when_its_answer_passes(routed: Server) -> None:
    reply = auto(routed, metadata={"task": "arithmetic", "min_confidence": "-100"})
    router = reply["router"]
    assert router["task"] == "arithmetic" and router["cascade"] == ["smollm2-135m", "gemma3-270m"]
    assert reply["model"] == "smollm2-135m" and len(router["attempts"]) == 1 and router["attempts"][0]["passed"]
    assert reply["choices"][0]["logprobs"] is None  # asked internally for the check, not returned


def test_auto_escalates_when_the_check_fails_and_bills_every_attempt(routed: Server) -> None:
    before = httpx.get(f"{routed.url}/v1/usage").json()["total"]
    reply = auto(routed, metadata={"task": "arithmetic", "grader": "regex:^NEVER$"})
    attempts = reply["router"]["attempts"]
    assert [a["model"] for a in attempts] == ["smollm2-135m", "gemma3-270m"]
    assert not attempts[0]["passed"] and "grader" in attempts[0]["reason"]
    assert reply["model"] == "gemma3-270m" and attempts[1]["reason"] == "last model of the cascade"
    assert reply["router"]["total_cost"] == pytest.approx(sum(a["cost"] for a in attempts))
    after = httpx.get(f"{routed.url}/v1/usage").json()["total"]
    assert after["requests"] - before["requests"] == 2
    assert after["cost"] - before["cost"] == pytest.approx(reply["router"]["total_cost"], rel=1e-6)
    unsure = auto(routed, metadata={"task": "arithmetic", "min_confidence": "0"})
    first = unsure["router"]["attempts"][0]
    assert unsure["model"] == "gemma3-270m" and "confidence" in first["reason"] and first["mean_logprob"] < 0


def test_auto_detects_the_task_and_streams(routed: Server) -> None:
    detected = auto(routed, metadata={"min_confidence": "-100"})  # no task given: detected from the words
    assert detected["router"]["task"] == "arithmetic"
    chunks = list(routed.client().chat.completions.create(
        model="auto", messages=ARITHMETIC, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}, metadata={"task": "arithmetic", "min_confidence": "-100"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == detected["choices"][0]["message"]["content"] and chunks[-1].usage is not None


def test_auto_refuses_what_it_cannot_route(routed: Server) -> None:
    client = routed.client()
    with pytest.raises(openai.BadRequestError, match="chat completions only"):
        client.completions.create(model="auto", prompt="2 + 2 =", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="grader"):
        client.chat.completions.create(model="auto", messages=ARITHMETIC, metadata={"grader": "telepathy"})
    with pytest.raises(openai.BadRequestError, match="min_confidence"):
        client.chat.completions.create(model="auto", messages=ARITHMETIC, metadata={"min_confidence": "sure"})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="smartest", messages=ARITHMETIC)
    too_long = [{"role": "user", "content": "word " * 3000}]  # longer than any model's context here
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="auto", messages=too_long, metadata={"task": "arithmetic"})


def test_eval_refuses_an_unknown_suite_and_an_unreachable_endpoint(tmp_path: Path) -> None:
    unknown = minimill("eval", "--suites", "telepathy", "--data-dir", str(tmp_path))
    assert unknown.returncode == 2 and "telepathy" in unknown.stdout + unknown.stderr
    down = minimill("eval", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--data-dir", str(tmp_path))
    assert down.returncode == 2 and "cannot list the models" in down.stdout
    empty = minimill("eval", "report", "--data-dir", str(tmp_path))
    assert empty.returncode == 2 and "no eval results" in empty.stdout
