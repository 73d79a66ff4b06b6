"""The router's pieces without a model: scoreboard and default, routes and cascades, checks, task
detection, upstream specs and per-model prices."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from minimill.billing.throughput import Throughput, ThroughputStore, measured
from minimill.config import BillingConfig, RoutingConfig, UpstreamSpec, build_config
from minimill.errors import InvalidRequest
from minimill.evals.results import ItemResult, ResultStore
from minimill.evals.scoreboard import Scoreboard
from minimill.evals.stats import wilson_interval
from minimill.evals.suite import HELDOUT_SEED, TUNE_SEED, Suite
from minimill.router.checks import check, validate_grader
from minimill.router.features import detect_task
from minimill.router.policy import Router
from minimill.runtime import price_book


def results(model: str, suite: str, scores: list[float], cost: float, seed: int = TUNE_SEED) -> list[ItemResult]:
    return [ItemResult(model=model, suite=suite, version="1", seed=seed, item_id=f"{suite}-{i}", score=s, answer="",
                       cost_usd=cost, latency_s=0.1) for i, s in enumerate(scores)]


def store_with(tmp_path: Path, rows: list[ItemResult]) -> ResultStore:
    store = ResultStore(tmp_path / "results")
    for row in rows:
        store.append(row)
    return store


def test_wilson_interval_brackets_the_mean_and_narrows_with_n() -> None:
    low, high = wilson_interval(0.5, 10)
    assert low < 0.5 < high
    wide, narrow = high - low, (lambda b: b[1] - b[0])(wilson_interval(0.5, 1000))
    assert narrow < wide / 5
    assert wilson_interval(0.0, 20)[0] == 0.0 and wilson_interval(0.0, 20)[1] > 0.05
    assert wilson_interval(1.0, 20)[1] == 1.0 and wilson_interval(1.0, 20)[0] < 0.95


def test_result_store_resumes_and_skips_a_torn_line(tmp_path: Path) -> None:
    store = store_with(tmp_path, results("small", "arithmetic", [1.0, 0.0], 0.001))
    path = store.path("small", "arithmetic", "1", TUNE_SEED)
    with path.open("a") as out:
        out.write('{"model": "small", "suite": "arith')  # a crash mid-write
    assert set(store.done("small", "arithmetic", "1", TUNE_SEED)) == {"arithmetic-0", "arithmetic-1"}
    assert store.all(seed=HELDOUT_SEED) == []


def test_default_is_the_cheapest_model_near_the_best_quality() -> None:
    rows = (results("small", "a", [1, 0, 0, 0], 0.001) + results("small", "b", [1, 1, 0, 0], 0.001)
            + results("mid", "a", [1, 1, 1, 0], 0.002) + results("mid", "b", [1, 1, 1, 0], 0.002)
            + results("large", "a", [1, 1, 1, 0], 0.004) + results("large", "b", [1, 1, 1, 1], 0.004))
    board = Scoreboard.build(rows)
    assert board.models["small"].quality == pytest.approx(0.375)
    assert board.models["mid"].quality == pytest.approx(0.75)
    assert board.models["large"].quality == pytest.approx(0.875)
    models = ["small", "mid", "large"]
    # 0.9 x 0.875 = 0.7875: only large; 0.85 x 0.875 = 0.744: mid is within it and cheaper
    assert board.choose_default(models, ratio=0.9).model == "large"
    assert board.choose_default(models, ratio=0.85).model == "mid"
    assert board.choose_default(models, ratio=0.4).model == "small"  # small's value per dollar no longer matters
    assert board.choose_default(models, ratio=0.0).model == "small"
    assert board.choose_default(["small", "mid"], ratio=0.9).model == "mid"  # the best served model counts
    choice = board.choose_default(models, ratio=0.85)
    assert "85%" in choice.reason and "large" in choice.reason and "0.750" in choice.reason
    assert board.choose_default(models, ratio=0.9, override="small").model == "small"
    assert board.choose_default(["new"], ratio=0.9).reason.startswith("no eval results")


def test_own_results_take_over_from_the_published_scoreboard(tmp_path: Path) -> None:
    published = store_with(tmp_path / "pub",
                           results("small", "a", [1, 1], 0.001) + results("large", "a", [1, 1], 0.004))
    own = ResultStore(tmp_path / "own")
    router = Router(own, RoutingConfig(), ["small", "large"], lambda m: 1.0, published=published)
    assert router.default().model == "small"  # both 1.0 published: the cheaper
    for row in results("small", "a", [0, 0], 0.001):  # the user's own eval of small replaces its published one
        own.append(row)
    assert router.default().model == "large"
    assert router.scoreboard().models["small"].quality == 0.0


def test_default_compares_models_on_the_suites_they_share() -> None:
    rows = (results("lucky", "easy", [1, 1, 1, 0], 0.001)  # measured on the easy suite only: 0.75 overall
            + results("broad", "easy", [1, 1, 1, 1], 0.001) + results("broad", "hard", [0, 0, 0, 0], 0.001))
    board = Scoreboard.build(rows)
    assert board.models["lucky"].quality > board.models["broad"].quality  # 0.75 vs 0.5 over their own suites
    choice = board.choose_default(["lucky", "broad"], ratio=0.9)
    assert choice.model == "broad" and "over 1 suites" in choice.reason  # 1.0 vs 0.75 on the shared suite


def test_newest_suite_version_wins() -> None:
    old = results("m", "a", [0, 0], 0.001)
    new = [ItemResult(model="m", suite="a", version="2", seed=TUNE_SEED, item_id=f"a-{i}", score=1.0, answer="")
           for i in range(2)]
    assert Scoreboard.build(new + old).accuracy("m", "a") == 1.0


def router(tmp_path: Path, rows: list[ItemResult], **config: float) -> Router:
    prices = {"small": 1.0, "mid": 2.0, "large": 4.0}
    return Router(store_with(tmp_path, rows), RoutingConfig(**config), list(prices), prices.__getitem__)


def test_route_starts_at_the_cheapest_good_enough_model(tmp_path: Path) -> None:
    rows = (results("small", "easy", [1, 1, 1, 1], 0.001) + results("large", "easy", [1, 1, 1, 1], 0.004)
            + results("small", "hard", [1, 0, 0, 0], 0.001) + results("mid", "hard", [1, 1, 0, 0], 0.002)
            + results("large", "hard", [1, 1, 1, 0], 0.004) + results("mid", "easy", [1, 1, 1, 0], 0.002))
    r = router(tmp_path, rows)
    assert r.route("easy").cascade == ("small",)  # nothing scores higher: no escalation
    assert r.route("hard").cascade == ("large",)  # small 0.25 and mid 0.5 are not within 0.95 of 0.75
    assert router(tmp_path / "b", rows, good_enough=0.6).route("hard").cascade == ("mid", "large")  # 0.5 >= 0.45
    assert router(tmp_path / "c", rows, good_enough=0.3).route("hard").cascade == ("small", "mid", "large")
    assert r.by_price() == ["small", "mid", "large"]


def test_route_without_scores_escalates_through_every_model_by_price(tmp_path: Path) -> None:
    route = router(tmp_path, []).route("anything")
    assert route.cascade == ("small", "mid", "large") and "no eval results" in route.reason


def test_a_task_nobody_passes_goes_to_the_cheapest(tmp_path: Path) -> None:
    rows = results("small", "t", [0, 0], 0.001) + results("large", "t", [0, 0], 0.004)
    assert router(tmp_path, rows).route("t").cascade == ("small",)


def test_unknown_task_uses_overall_quality(tmp_path: Path) -> None:
    rows = results("small", "a", [0, 0, 0, 1], 0.001) + results("large", "a", [1, 1, 1, 1], 0.004)
    assert router(tmp_path, rows).route(None).cascade == ("large",)
    assert router(tmp_path / "b", rows).route("not-a-suite").cascade == ("large",)


def test_checks_schema_grader_and_confidence() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
    ok = dict(mean_logprob=-0.1, min_confidence=-1.0, grader=None)
    assert check('{"n": 3}', response_format=schema, **ok).passed
    assert not check('{"n": "three"}', response_format=schema, **ok).passed
    assert not check("n = 3", response_format=schema, **ok).passed
    assert not check("[1]", response_format={"type": "json_object"}, **ok).passed
    assert check("42", response_format=None, mean_logprob=-0.1, min_confidence=-1.0, grader="integer").passed
    assert not check("forty-two", response_format=None, mean_logprob=-0.1, min_confidence=-1.0,
                     grader="integer").passed
    assert check("-1,234.5", response_format=None, mean_logprob=None, min_confidence=0, grader="number").passed
    assert check("B", response_format=None, mean_logprob=None, min_confidence=0, grader="regex:[A-D]").passed
    assert not check("E", response_format=None, mean_logprob=None, min_confidence=0, grader="regex:[A-D]").passed
    unsure = check("42", response_format=None, mean_logprob=-2.5, min_confidence=-1.0, grader=None)
    assert not unsure.passed and "confidence" in unsure.reason
    with pytest.raises(InvalidRequest):
        validate_grader("regex:[")
    with pytest.raises(InvalidRequest):
        validate_grader("telepathy")


def json_schema(schema: object) -> dict[str, object]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def schema_check(answer: str, schema: object) -> bool:
    return check(answer, response_format=json_schema(schema), mean_logprob=None, min_confidence=0.0,
                 grader=None).passed


@pytest.fixture
def listener() -> Iterator[tuple[str, list[object]]]:
    """A TCP server on 127.0.0.1 that records (and at once closes) every connection made to it."""
    connections: list[object] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.05)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            connections.append(peer)
            conn.close()  # the old code's fetch then fails fast instead of hanging the test

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", connections
    done.set()
    thread.join()
    server.close()


def test_schema_refs_never_reach_the_network_or_the_disk(listener: tuple[str, list[object]]) -> None:
    url, connections = listener
    outside = [{"$ref": f"{url}/x.json"},
               {"type": "object", "properties": {"n": {"$ref": f"{url}/n.json#/n"}}},
               {"$id": f"{url}/root.json", "properties": {"n": {"$ref": "n.json"}}},
               {"$schema": "http://json-schema.org/draft-07/schema#", "properties": {"n": {"$ref": f"{url}/7"}}},
               {"$schema": "http://json-schema.org/draft-04/schema#", "properties": {"n": {"$ref": f"{url}/4"}}},
               {"$dynamicRef": f"{url}/d#meta"},
               {"$ref": "file:///etc/passwd"}, {"$ref": "other.json"}]
    for schema in outside:
        # A schema that cannot be used was accepted for generation already: it does not escalate the answer.
        assert schema_check('{"n": 3}', schema), schema
    assert connections == []
    local = {"$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}}}
    assert schema_check('{"n": 3}', local) and not schema_check('{"n": "three"}', local)
    shipped = {"properties": {"n": {"$ref": "http://json-schema.org/draft-07/schema#/definitions/nonNegativeInteger"}}}
    assert schema_check('{"n": 3}', shipped) and not schema_check('{"n": -3}', shipped)  # jsonschema's own copy


def test_pathological_schemas_do_not_raise() -> None:
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(10_000):
        child: dict[str, object] = {}
        inner["properties"] = {"n": child}
        inner = child
    for schema in (deep, {"properties": {"n": {"type": "string", "pattern": "("}}}, {"patternProperties": {"[": {}}},
                   {"$schema": ["not", "a", "string"]}, {"$ref": "#/$defs/missing"}, {"$ref": 5},
                   {"$defs": {"x": {"$ref": "#/$defs/x"}}, "$ref": "#/$defs/x"}, {"type": "nonsense"},
                   {"$schema": "http://json-schema.org/draft-03/schema#", "extends": {"$ref": "http://x/y"}}):
        assert schema_check('{"n": 3}', schema), schema


def fake(name: str, *keywords: str) -> Suite:
    return Suite(name=name, version="1", description="", generate=lambda s, n: [], grade=lambda i, a: 0.0,
                 keywords=keywords)


def test_task_detection() -> None:
    suites = [fake("arithmetic", "calculate", "compute"), fake("units", "convert", "kilometres"),
              fake("extraction", "extract")]
    assert detect_task("Please calculate 3 + 4", metadata=None, response_format=None, suites=suites) == "arithmetic"
    assert detect_task("Convert 3 kilometres to metres", metadata=None, response_format=None,
                       suites=suites) == "units"
    assert detect_task("hello", metadata=None, response_format=None, suites=suites) is None
    assert detect_task("calculate", metadata={"task": "units"}, response_format=None, suites=suites) == "units"
    assert detect_task("hi", metadata=None, response_format={"type": "json_schema"}, suites=suites) == "extraction"
    assert detect_task("calculate then convert", metadata=None, response_format=None, suites=suites) is None


def test_upstream_spec_parsing_reads_the_key_from_the_environment_and_hides_it() -> None:
    spec = UpstreamSpec.parse("peer=http://127.0.0.1:9/v1/,model=smollm2-135m,key-env=PEER_KEY,input=0.1,"
                              "output=0.4,timeout=5", {"PEER_KEY": "sk-very-secret"})
    assert (spec.name, spec.base_url, spec.model, spec.timeout) == ("peer", "http://127.0.0.1:9/v1", "smollm2-135m", 5)
    assert spec.api_key == "sk-very-secret" and "sk-very-secret" not in repr(spec)
    assert "sk-very-secret" not in repr(build_config(upstreams=["p=http://x/v1"]))
    for bad in ("peer", "peer=ftp://x", "peer=http://x,key-env=MISSING", "peer=http://x,colour=red"):
        with pytest.raises(ValueError):
            UpstreamSpec.parse(bad, {})
    with pytest.raises(ValueError):
        RoutingConfig(upstreams=(spec, spec))


def rates(model: str, prefill: float, decode: float, kv: int = 20_000) -> Throughput:
    return Throughput(model=model, prefill_tokens_per_second=prefill, decode_tokens_per_second=decode,
                      kv_bytes_per_token=kv, threads=2, measured_at="2026-12-03", host="test")


def test_prices_follow_measured_throughput_and_upstreams_are_priced_by_spec() -> None:
    spec = UpstreamSpec(name="peer", base_url="http://x/v1", model="m", price_input=0.25, price_output=1.0)
    book = price_book(BillingConfig(), {"small": rates("small", 1000, 100),
                                        "large": rates("large", 250, 20, kv=40_000)}, (spec,))
    small, large = book.for_model("small"), book.for_model("large")
    assert float(large.input) == pytest.approx(4 * float(small.input), rel=1e-5)  # a quarter of the prefill rate
    assert float(large.output) == pytest.approx(5 * float(small.output), rel=1e-5)  # a fifth of the decode rate
    assert float(large.session_retention) == pytest.approx(2 * float(small.session_retention), rel=1e-4)  # KV x2
    # hardware $0.10/h, margin 1.5: 0.1 / (1000 * 3600) * 1e6 * 1.5 per 1M input tokens at 1,000 tok/s
    assert float(small.input) == pytest.approx(0.1 / 3.6e6 * 1e6 * 1.5, rel=1e-5)
    peer = book.for_model("peer")
    assert (peer.input, peer.output) == (Decimal("0.25"), Decimal("1.0"))
    assert peer.cached_input == Decimal("0.25")  # no discount given: cached tokens at the full input price
    unpriced = price_book(BillingConfig(), {}, (UpstreamSpec(name="free", base_url="http://x/v1", model="m"),))
    assert unpriced.for_model("free") == unpriced.default


def test_throughput_store_prefers_this_hosts_measurement(tmp_path: Path) -> None:
    own, published = ThroughputStore(tmp_path / "own.json"), ThroughputStore(tmp_path / "published.json")
    published.put("abc", rates("m", 500, 50))
    assert measured("abc", own, published) == rates("m", 500, 50)
    own.put("abc", rates("m", 700, 70))
    own.put("def", rates("n", 1, 1))
    assert measured("abc", own, published) == rates("m", 700, 70)
    assert measured("zzz", own, published) is None
    (tmp_path / "own.json").write_text("{not json")
    assert measured("abc", own, published) == rates("m", 500, 50)  # a damaged file counts as no measurement


def scored(model: str, scores: list[float], confidences: list[float | None]) -> list[ItemResult]:
    return [ItemResult(model=model, suite="t", version="1", seed=TUNE_SEED, item_id=f"t-{i}", score=s, answer="",
                       mean_logprob=c) for i, (s, c) in enumerate(zip(scores, confidences, strict=True))]


def test_confidence_thresholds_are_tuned_to_escalate_only_what_needs_it() -> None:
    from minimill.router.policy import tune_threshold

    large = scored("large", [1, 1, 1, 1, 1, 1], [-0.1] * 6)
    # small is wrong exactly on its two least confident answers: escalate those two, keep the rest
    small = scored("small", [1, 1, 0, 1, 0, 1], [-0.2, -0.1, -2.0, -0.3, -1.5, -0.25])
    threshold = tune_threshold(small, large, target=0.95)
    assert threshold == pytest.approx(-0.3)  # -1.5 and -2.0 escalate; -0.3 and above answer
    assert tune_threshold(scored("small", [1] * 6, [-3.0] * 6), large, target=0.95) == float("-inf")
    hopeless = scored("small", [0] * 6, [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6])
    assert tune_threshold(hopeless, large, target=0.95) > -0.1  # every answer escalates
    assert tune_threshold(small[:3], large, target=0.95) is None  # too few items to tell


def test_the_route_carries_the_tuned_threshold_or_skips_a_hopeless_model(tmp_path: Path) -> None:
    large = scored("large", [1, 1, 1, 1, 1, 1], [-0.1] * 6)
    small = scored("small", [1, 1, 0, 1, 0, 1], [-0.2, -0.1, -2.0, -0.3, -1.5, -0.25])
    prices = {"small": 1.0, "large": 4.0}
    store = store_with(tmp_path, [*large, *small])
    router = Router(store, RoutingConfig(good_enough=0.95), ["small", "large"], prices.__getitem__,
                    published=ResultStore(tmp_path / "none"))
    # small alone (0.67) is not within 95% of large (1.0), but its confident answers are all right
    route = router.route("t")
    assert route.cascade == ("small", "large") and route.min_confidence == pytest.approx(-0.3)
    assert "tuned" in route.reason
    hopeless = store_with(tmp_path / "h", [*large, *scored("small", [0] * 6, [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6])])
    assert Router(hopeless, RoutingConfig(good_enough=0.95), ["small", "large"], prices.__getitem__,
                  published=ResultStore(tmp_path / "none")).route("t").cascade == ("large",)


def test_a_cascade_dearer_than_the_large_model_alone_is_skipped(tmp_path: Path) -> None:
    from minimill.router.policy import cascade_saves

    large = scored("large", [1, 1, 1, 1, 1, 1], [-0.1] * 6)
    small = scored("small", [1, 1, 0, 1, 0, 1], [-0.2, -0.1, -2.0, -0.3, -1.5, -0.25])
    # two of six escalate: at a quarter of the price that saves, at 80% of it the doubled items cost more
    assert cascade_saves(small, large, -0.3, (1.0, 4.0))
    assert not cascade_saves(small, large, -0.3, (3.2, 4.0))
    # measured costs per item win over list prices
    dear = [replace(r, cost_usd=3.0) for r in small]
    assert not cascade_saves(dear, [replace(r, cost_usd=4.0) for r in large], -0.3, (1.0, 4.0))
    prices = {"small": 3.2, "large": 4.0}
    router = Router(store_with(tmp_path, [*large, *small]), RoutingConfig(good_enough=0.95), ["small", "large"],
                    prices.__getitem__, published=ResultStore(tmp_path / "none"))
    assert router.route("t").cascade == ("large",)


def test_a_schema_pattern_that_backtracks_without_end_is_stopped_not_hung() -> None:
    import json
    import time

    evil = "^(a|aa)+$"  # backtracks without end in `re` and `regex` alike on 40 a and one other
    answer = json.dumps({"name": "a" * 40 + "!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!": 1})
    started = time.monotonic()
    for schema in ({"properties": {"name": {"type": "string", "pattern": evil}}},
                   {"patternProperties": {evil: {"type": "integer"}}},
                   {"properties": {"name": {}}, "patternProperties": {evil: {}}, "additionalProperties": False}):
        assert not schema_check(answer, schema), schema  # undecided in time: the answer does not pass
    assert time.monotonic() - started < 5  # unbounded, each would take ~fib(40) steps
    assert schema_check('{"name": "aaa"}', {"properties": {"name": {"pattern": evil}}})
    assert not schema_check('{"name": "b"}', {"properties": {"name": {"pattern": "^a"}}})
    assert schema_check('{"x1": 2}', {"patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False})
    assert not schema_check('{"y": 2}', {"patternProperties": {"^x": {}}, "additionalProperties": False})
