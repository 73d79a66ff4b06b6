"""The server's side of an engine process: the engine facade the rest of minimill uses.

`EngineClient` looks like an engine (tokenize, chat templates, `generate`, named-KV operations, stats) but
runs the engine in a child process (`worker.py`) that it starts, watches and restarts. Text work
(tokenizing, detokenizing, templates) stays here, on a vocabulary-only load of the model. When the child
dies (a native crash, an OOM kill, SIGKILL), every request in flight on it gets a 503 `engine_restarted`
(a stream: an in-band error), a new child is started, and a request that was in flight at two deaths is
quarantined: refused with a 400 from then on, so that no input can crash the engine in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection

from minimill import errors
from minimill.engine.llama import LlamaModel
from minimill.engine.protocol import (
    Abort,
    Aborted,
    Command,
    EngineSpec,
    Event,
    Extend,
    Failed,
    Forget,
    Item,
    Ready,
    Snapshot,
    Stop,
    Submit,
    TierAnswer,
    TierOf,
)
from minimill.engine.text import TextOps, chat_template_of
from minimill.engine.types import ChoiceDelta, EngineStats, GenerationRequest, KVTier, Usage
from minimill.errors import EngineUnavailable, InvalidRequest, MinimillError
from minimill.metrics import Metrics

log = logging.getLogger(__name__)
START_TIMEOUT_SECONDS = 300.0
CALL_TIMEOUT_SECONDS = 5.0
QUARANTINE_AFTER_CRASHES = 2
ABORT_BILLING_SECONDS = 300.0  # how long an aborted request's `on_abort` waits for the engine's account


@dataclass(slots=True, eq=False)
class _Pending:
    """A request in flight: where its items go, and what to call if it is aborted."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[ChoiceDelta | Usage | Exception]
    request: GenerationRequest
    fingerprint: str
    aborted_at: float | None = None

    def put(self, item: ChoiceDelta | Usage | Exception) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass(slots=True)
class _Child:
    """One engine process and the pipe to it."""

    process: subprocess.Popen[bytes]
    conn: Connection
    ready: Ready
    snapshot: Snapshot | None = None
    answers: dict[int, tuple[threading.Event, list[KVTier | None]]] = field(default_factory=dict)


def fingerprint(request: GenerationRequest) -> str:
    """What identifies a request's content for quarantine: prompt and sampling, not its id."""
    return hashlib.sha256(repr((request.prompt_tokens, request.params, request.n)).encode()).hexdigest()


class EngineClient(TextOps):
    """One served model: text work here (`TextOps`), generation in a supervised engine process."""

    def __init__(self, spec: EngineSpec, vocab: LlamaModel, metrics: Metrics, *,
                 log_level: int = logging.WARNING) -> None:
        self.spec = spec
        self.name = spec.name
        self.system_fingerprint = spec.system_fingerprint
        self.model = vocab
        self.config = spec.config
        self.created = int(time.time())
        self.template = chat_template_of(vocab)
        self.longest_piece = vocab.longest_piece()  # bounds a prompt's tokens from its characters
        self._metrics = metrics
        self._log_level = log_level
        self._lock = threading.Lock()  # guards the child, the pending requests and the suspects
        self._keys = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._suspects: Counter[str] = Counter()
        self._restarts = 0
        self._closing = False
        self._child: _Child | None = self._start()
        self.n_ctx = self._child.ready.n_ctx  # the context a request may use (the vocabulary load has none)

    # ---- the engine process ------------------------------------------------------------------------
    @property
    def batch_slots(self) -> int:
        """How many Batch API sequences the engine runs at once."""
        child = self._child
        return child.ready.batch_slots if child is not None else 1

    @property
    def restarts(self) -> int:
        """Times the engine process died and was started again."""
        return self._restarts

    def stats(self) -> EngineStats:
        """The engine's load as last reported (a fraction of a second old); unhealthy while it restarts."""
        child = self._child
        snap = child.snapshot if child is not None else None
        alive = child is not None and child.process.poll() is None
        if snap is None:
            total = child.ready.kv_total if child is not None else 0
            return EngineStats(0, 0, 0, 0, total, healthy=alive, restarts=self._restarts)
        return replace(snap.stats, healthy=alive and snap.stats.healthy, restarts=self._restarts + snap.stats.restarts)

    def metrics_text(self) -> bytes:
        """The engine process's Prometheus exposition, as last reported."""
        child = self._child
        return child.snapshot.metrics if child is not None and child.snapshot is not None else b""

    def pid(self) -> int | None:
        """The engine process's pid (for tests and operators)."""
        child = self._child
        return child.process.pid if child is not None else None

    # ---- named KV ----------------------------------------------------------------------------------
    def forget(self, name: str) -> None:
        """Drop a named entry from every tier, the live KV included."""
        self._send(Forget(name))

    def extend(self, name: str, expires_at: float) -> None:
        """Keep a named entry until `expires_at` in every tier it is in."""
        self._send(Extend(name, expires_at))

    def tier_of(self, name: str) -> KVTier | None:
        """The warmest tier holding a named entry (None: none, or the engine did not answer in time)."""
        child = self._child
        if child is None:
            return None
        call = next(self._keys)
        done, answer = threading.Event(), list[KVTier | None]()
        child.answers[call] = (done, answer)
        try:
            self._send(TierOf(call, name))
            done.wait(CALL_TIMEOUT_SECONDS)
        finally:
            child.answers.pop(call, None)
        return answer[0] if answer else None

    # ---- generation --------------------------------------------------------------------------------
    async def run_to_end(self, request: GenerationRequest) -> Usage:
        """Run `request` for what it leaves behind (a prefilled, kept prefix), discarding its text: its usage."""
        usage = None
        async for item in self.generate(request):
            if isinstance(item, Usage):
                usage = item
        if usage is None:  # generate always ends with one; kept explicit for the type checker
            raise EngineUnavailable(f"request {request.request_id} ended without its usage")
        return usage

    async def generate(self, request: GenerationRequest) -> AsyncIterator[ChoiceDelta | Usage]:
        """Stream deltas of all choices, then one Usage. Raises before the first item on bad input.

        Closing the iterator early (client gone) aborts the request in the engine process.
        """
        mark = fingerprint(request)
        if self._suspects[mark] >= QUARANTINE_AFTER_CRASHES:
            raise InvalidRequest("This request was in flight each time the engine crashed, twice; it is refused "
                                 "so that it cannot crash it again.", code="request_quarantined")
        pending = _Pending(asyncio.get_running_loop(), asyncio.Queue(), request, mark)
        key = next(self._keys)
        with self._lock:
            self._sweep_aborted()
            if self._child is None:
                raise EngineUnavailable("the engine is restarting; please retry", code="engine_restarted")
            self._pending[key] = pending
            self._send_locked(Submit(key, replace(request, on_abort=None)))
        finished = False
        try:
            while True:
                item = await pending.queue.get()
                if isinstance(item, Exception):
                    finished = True
                    raise item
                yield item
                if isinstance(item, Usage):
                    finished = True
                    return
        finally:
            if not finished:
                with self._lock:
                    pending.aborted_at = time.monotonic()
                    if key in self._pending:
                        self._send_locked(Abort(key))

    def _sweep_aborted(self) -> None:
        """Forget aborted requests the engine never gave an account of (it computed nothing for them)."""
        stale = time.monotonic() - ABORT_BILLING_SECONDS
        for key in [k for k, p in self._pending.items() if p.aborted_at is not None and p.aborted_at < stale]:
            del self._pending[key]

    # ---- supervision -------------------------------------------------------------------------------
    def _start(self) -> _Child:
        """Start an engine process and wait until it is ready; its reader thread then takes over.

        A plain `python -m minimill.engine.worker FD` over a socket pair, not multiprocessing's spawn: that
        would re-import the caller's `__main__`, which may be any script."""
        ours_socket, theirs_socket = socket.socketpair()
        ours = Connection(ours_socket.detach())
        theirs = theirs_socket.detach()
        process = subprocess.Popen([sys.executable, "-m", "minimill.engine.worker", str(theirs)], pass_fds=(theirs,))
        os.close(theirs)
        ours.send((self.spec, self._log_level))
        ready = self._wait_ready(ours, process)
        child = _Child(process, ours, ready)
        threading.Thread(target=self._read, args=(child,), name=f"engine-{self.name}-events", daemon=True).start()
        return child

    def _wait_ready(self, conn: Connection, process: subprocess.Popen[bytes]) -> Ready:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if conn.poll(0.2):
                with contextlib.suppress(EOFError, OSError):
                    event = conn.recv()
                    if isinstance(event, Ready):
                        return event
            if process.poll() is not None:
                break
        process.kill()
        process.wait()
        conn.close()
        raise ValueError(f"the engine process for {self.name} did not start (exit code {process.returncode}); "
                         "see its log above")

    def _read(self, child: _Child) -> None:
        """Events from one child until it dies, then the restart."""
        while True:
            try:
                event = child.conn.recv()
            except (EOFError, OSError):
                break
            self._dispatch(child, event)
        self._on_exit(child)

    def _dispatch(self, child: _Child, event: Event) -> None:
        if isinstance(event, Snapshot):
            child.snapshot = event
        elif isinstance(event, Item):
            with self._lock:
                pending = self._pending.get(event.key)
                if pending is not None and isinstance(event.item, Usage):
                    del self._pending[event.key]
            if pending is not None:
                pending.put(event.item)
        elif isinstance(event, Failed):
            with self._lock:
                pending = self._pending.pop(event.key, None)
            if pending is not None:
                pending.put(_error(event))
        elif isinstance(event, Aborted):
            with self._lock:
                pending = self._pending.pop(event.key, None)
            callback = pending.request.on_abort if pending is not None else None
            if callback is not None and not pending.loop.is_closed():  # type: ignore[union-attr]
                pending.loop.call_soon_threadsafe(callback, event.request_id, event.usage)  # type: ignore[union-attr]
        elif isinstance(event, TierAnswer):
            waiting = child.answers.get(event.call)
            if waiting is not None:
                waiting[1].append(event.tier)
                waiting[0].set()

    def _on_exit(self, child: _Child) -> None:
        """The child is gone: fail what was in flight on it, remember it, and start another."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=10)
        with self._lock:
            if self._child is child:
                self._child = None
            lost = [p for p in self._pending.values() if p.aborted_at is None]
            self._pending.clear()
            for pending in lost:
                self._suspects[pending.fingerprint] += 1
            closing = self._closing
        if closing:
            return
        log.error("the engine process of %s died (exit code %s) with %d requests in flight; restarting it",
                  self.name, child.process.returncode, len(lost))
        error = EngineUnavailable(f"the engine of {self.name} crashed and was restarted; this request was lost, "
                                  "please retry it", code="engine_restarted")
        for pending in lost:
            pending.put(error)
        self._restarts += 1
        self._metrics.engine_process_restarts.labels(self.name).inc()
        self._restart()

    def _restart(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                child = self._start()
            except ValueError:
                log.exception("restarting the engine of %s failed; trying again in %.1f s", self.name, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            with self._lock:
                if self._closing:
                    self._send_to(child, Stop())
                    return
                self._child = child
            return

    def _send(self, command: Command) -> None:
        with self._lock:
            self._send_locked(command)

    def _send_locked(self, command: Command) -> None:
        if self._child is None:
            if isinstance(command, Submit):
                raise EngineUnavailable("the engine is restarting; please retry", code="engine_restarted")
            return  # a named-KV change for a process that is gone: its live KV is gone with it
        self._send_to(self._child, command)

    @staticmethod
    def _send_to(child: _Child, command: Command) -> None:
        try:
            child.conn.send(command)
        except OSError:  # it died: its reader fails what was pending on it
            if isinstance(command, Submit):
                raise EngineUnavailable("the engine is restarting; please retry", code="engine_restarted") from None

    def close(self) -> None:
        """Stop the engine process (waiting for it, then killing it); fail what is still in flight."""
        with self._lock:
            self._closing = True
            child, self._child = self._child, None
            pending, self._pending = list(self._pending.values()), {}
        for request in pending:
            request.put(EngineUnavailable("the engine was shut down"))
        if child is not None:
            self._send_to(child, Stop())
            try:
                child.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.conn.close()


def _error(event: Failed) -> MinimillError:
    """The domain error a `Failed` event names."""
    kind = getattr(errors, event.error, None)
    if kind is errors.CapacityExceeded:
        return errors.CapacityExceeded(event.message, retry_after=event.retry_after)
    if not (isinstance(kind, type) and issubclass(kind, MinimillError)):
        kind = EngineUnavailable
    return kind(event.message, param=event.param, code=event.code)
