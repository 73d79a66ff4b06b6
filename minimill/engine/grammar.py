"""Grammars from users, made safe before llama.cpp sees them.

llama.cpp's grammar parser and its stack expansion recurse once per nesting level and abort on a grammar
that no token can continue: a hostile `response_format` could take the whole process down. So a schema
is bounded (size, nesting) before it is converted, its GBNF is bounded (size, parenthesis depth), and
then it is compiled and walked by a disposable worker process (`grammar_worker`): if the worker dies or
finds no token that can start or continue the grammar, the request gets a 400 and nothing else is hurt.
Verdicts are cached by the grammar's hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minimill.config import RequestLimits
from minimill.errors import InvalidRequest

log = logging.getLogger(__name__)
PROBE_TIMEOUT_SECONDS = 30.0
VERDICTS_KEPT = 1024


def json_depth(value: object) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_schema(schema: dict[str, object], limits: RequestLimits, param: str = "response_format") -> None:
    """InvalidRequest for a JSON schema too large or too deep to be turned into a grammar (`param` names the
    request field the schema came from)."""
    size = len(json.dumps(schema))
    if size > limits.max_schema_bytes:
        raise InvalidRequest(f"the JSON schema of {param} is {size} bytes; at most {limits.max_schema_bytes} "
                             "are allowed", param=param, code="schema_too_large")
    depth = json_depth(schema)
    if depth > limits.max_schema_depth:
        raise InvalidRequest(f"the JSON schema of {param} is nested {depth} levels deep; at most "
                             f"{limits.max_schema_depth} are allowed", param=param, code="schema_too_deep")


def grammar_depth(gbnf: str) -> int:
    """Deepest parenthesis nesting of a GBNF text, outside string literals and character classes."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in gbnf:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char == '"':
            quote = '"'
        elif char == "[":
            quote = "]"
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def check_grammar(gbnf: str, limits: RequestLimits, param: str = "response_format") -> None:
    """InvalidRequest for a grammar whose size or nesting would make llama.cpp recurse too deep."""
    if len(gbnf) > 16 * limits.max_schema_bytes:
        raise InvalidRequest(f"the grammar of this {param} is {len(gbnf)} characters; at most "
                             f"{16 * limits.max_schema_bytes} are allowed", param=param, code="grammar_too_large")
    depth = grammar_depth(gbnf)
    if depth > limits.max_schema_repeat:
        raise InvalidRequest(f"the grammar of this {param} nests {depth} levels (long maxLength, maxItems or "
                             f"pattern repetitions); at most {limits.max_schema_repeat} are allowed",
                             param=param, code="grammar_too_deep")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the worker found: usable, or why not."""

    ok: bool
    reason: str = ""


class GrammarProbe:
    """A worker process that compiles and walks grammars for one model's vocabulary.

    Thread-safe (one probe at a time). The worker is started on first use and again after it dies;
    `probe` never raises for a bad grammar, it returns a Verdict.
    """

    def __init__(self, model_path: Path, *, command: Callable[[Path], list[str]] | None = None) -> None:
        self.model_path = model_path
        self._command = command or (lambda path: [sys.executable, "-m", "minimill.engine.grammar_worker", str(path)])
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self.crashes = 0

    def probe(self, gbnf: str) -> Verdict:
        """The (cached) verdict on `gbnf`."""
        digest = hashlib.sha256(gbnf.encode()).hexdigest()
        with self._lock:
            verdict = self._verdicts.get(digest)
            if verdict is None:
                verdict = self._ask(gbnf)
                self._verdicts[digest] = verdict
                if len(self._verdicts) > VERDICTS_KEPT:
                    self._verdicts.popitem(last=False)
            self._verdicts.move_to_end(digest)
            return verdict

    def _ask(self, gbnf: str) -> Verdict:
        process = self._worker()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps({"grammar": gbnf}) + "\n")
            process.stdin.flush()
            line = _readline(process, PROBE_TIMEOUT_SECONDS)
        except (BrokenPipeError, OSError, TimeoutError) as exc:
            line = ""
            log.warning("grammar worker failed: %s", exc)
        if not line:
            self._kill()
            self.crashes += 1
            return Verdict(False, "llama.cpp could not compile this grammar (the attempt crashed or hung)")
        answer = json.loads(line)
        return Verdict(bool(answer["ok"]), str(answer.get("reason", "")))

    def _worker(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(self._command(self.model_path), stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                             encoding="utf-8")
        return self._process

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def close(self) -> None:
        """Stop the worker."""
        with self._lock:
            self._kill()


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    """One line from the worker, or "" if it exits first; TimeoutError past `timeout`."""
    assert process.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise TimeoutError(f"no answer within {timeout} s")
    return result[0] if result else ""


@dataclass(slots=True)
class GrammarGuard:
    """Turns a request's `response_format` into a grammar llama.cpp can run safely, or a 400."""

    limits: RequestLimits
    probe: GrammarProbe
    convert: Callable[[dict[str, object]], str]

    def from_schema(self, schema: dict[str, object], param: str = "response_format") -> str:
        """A checked, probed GBNF for a JSON schema; InvalidRequest (naming `param`) if it is too big,
        unsupported or unusable."""
        check_schema(schema, self.limits, param)
        try:
            gbnf = self.convert(schema)
        except RecursionError:
            raise InvalidRequest(f"the JSON schema of {param} is nested too deeply", param=param,
                                 code="schema_too_deep") from None
        check_grammar(gbnf, self.limits, param)
        verdict = self.probe.probe(gbnf)
        if not verdict.ok:
            raise InvalidRequest(f"the JSON schema of {param} cannot be used: {verdict.reason}",
                                 param=param, code="unsupported_schema")
        return gbnf

    def close(self) -> None:
        """Stop the probe's worker."""
        self.probe.close()
