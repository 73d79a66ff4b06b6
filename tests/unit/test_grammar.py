"""Grammar bounds (pure) and the disposable probe process (a fake worker stands in for llama.cpp)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from minimill.config import RequestLimits
from minimill.engine.grammar import GrammarGuard, GrammarProbe, check_grammar, check_schema, grammar_depth, json_depth
from minimill.errors import InvalidRequest

LIMITS = RequestLimits(max_schema_bytes=1000, max_schema_depth=4, max_schema_repeat=3)


def fake_worker(tmp_path: Path, body: str) -> list[str]:
    """A worker that answers each grammar line by running `body` (with `grammar` bound)."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal, sys, time
        for line in sys.stdin:
            grammar = json.loads(line)["grammar"]
        {textwrap.indent(textwrap.dedent(body), "    ")}
            sys.stdout.write(json.dumps({{"ok": True, "reason": ""}}) + "\\n")
            sys.stdout.flush()
    """))
    return [sys.executable, str(script)]


def test_depths_count_nesting_without_recursion() -> None:
    assert json_depth(1) == 0
    assert json_depth({"a": [1, {"b": 2}]}) == 3
    deep: object = 0
    for _ in range(50_000):
        deep = [deep]
    assert json_depth(deep) == 50_000
    assert grammar_depth('root ::= ("a" ("b")?)?') == 2
    assert grammar_depth('root ::= "((((" [(] x') == 0  # inside literals and classes parens do not nest
    assert grammar_depth('root ::= "\\"(" ("x")') == 1


def test_schema_and_grammar_bounds_are_400s() -> None:
    check_schema({"type": "object", "properties": {"a": {"type": "string"}}}, LIMITS)
    with pytest.raises(InvalidRequest) as too_deep:
        check_schema({"a": {"b": {"c": {"d": {"e": 1}}}}}, LIMITS)
    assert too_deep.value.code == "schema_too_deep" and too_deep.value.param == "response_format"
    with pytest.raises(InvalidRequest) as too_big:
        check_schema({"enum": ["x" * 2000]}, LIMITS)
    assert too_big.value.code == "schema_too_large"
    check_grammar('root ::= (("a")?)?', LIMITS)
    with pytest.raises(InvalidRequest) as nested:
        check_grammar('root ::= ((((("a")?)?)?)?)?', LIMITS)
    assert nested.value.code == "grammar_too_deep"


def test_a_worker_that_crashes_costs_one_verdict_and_is_restarted(tmp_path: Path) -> None:
    command = fake_worker(tmp_path, 'if "crash" in grammar: os.kill(os.getpid(), signal.SIGSEGV)')
    probe = GrammarProbe(tmp_path / "model.gguf", command=lambda _: command)
    try:
        assert probe.probe('root ::= "fine"').ok
        verdict = probe.probe('root ::= "crash"')
        assert not verdict.ok and "crashed" in verdict.reason
        assert probe.crashes == 1
        assert probe.probe('root ::= "fine again"').ok  # a fresh worker
        assert not probe.probe('root ::= "crash"').ok  # cached: not tried again
        assert probe.crashes == 1
    finally:
        probe.close()


def test_a_hanging_worker_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("minimill.engine.grammar.PROBE_TIMEOUT_SECONDS", 0.5)
    probe = GrammarProbe(tmp_path / "model.gguf", command=lambda _: fake_worker(tmp_path, "time.sleep(60)"))
    try:
        verdict = probe.probe('root ::= "x"')
        assert not verdict.ok and probe.crashes == 1
    finally:
        probe.close()


def test_the_guard_refuses_what_the_probe_refuses(tmp_path: Path) -> None:
    command = fake_worker(tmp_path, 'if "no" in grammar: sys.stdout.write(json.dumps({"ok": False, "reason": '
                                    '"no token can start it"}) + "\\n"); sys.stdout.flush(); continue')
    guard = GrammarGuard(LIMITS, GrammarProbe(tmp_path / "m.gguf", command=lambda _: command),
                         convert=lambda schema: f'root ::= "{schema["const"]}"')
    try:
        assert guard.from_schema({"const": "yes"}) == 'root ::= "yes"'
        with pytest.raises(InvalidRequest) as refused:
            guard.from_schema({"const": "no"})
        assert "no token can start it" in refused.value.message and refused.value.param == "response_format"
    finally:
        guard.close()
