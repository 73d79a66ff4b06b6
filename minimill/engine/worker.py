"""The engine process: one model's engine (llama.cpp context, scheduler, KV index, tiers) behind a pipe.

`main` runs in a child process that `client.EngineClient` starts and supervises. It builds the engine, says
`Ready`, then turns commands into engine calls and streams events back. A native crash here costs only
this process: the server fails its requests in flight and starts a new one. The pipe closing (the server
exited or died) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from dataclasses import replace
from multiprocessing.connection import Connection

from prometheus_client import generate_latest

from minimill.engine.engine import Engine
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
from minimill.engine.types import GenerationRequest, Usage
from minimill.errors import MinimillError
from minimill.kv.prefix_disk import PrefixDisk
from minimill.kv.tiers import TierStore
from minimill.metrics import Metrics

SNAPSHOT_SECONDS = 0.25
SPEC_TIMEOUT_SECONDS = 60.0
log = logging.getLogger(__name__)


def main(conn: Connection, spec: EngineSpec, log_level: int = logging.WARNING) -> None:
    """Build the engine and serve commands until `Stop` or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle: it stops us in order
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s engine[{spec.name}] %(name)s: %(message)s")
    metrics = Metrics()
    model = LlamaModel(spec.model_path)
    tiers = TierStore(spec.tier_fingerprint, spec.tier_directory, spec.tier_limits)
    config = spec.config
    prefixes = (PrefixDisk(spec.tier_fingerprint, spec.tier_directory / config.prefix_disk_dir,
                          config.prefix_disk_bytes)
                if spec.tier_directory is not None and config.retain_ram and config.prefix_disk_bytes > 0 else None)
    draft = LlamaModel(spec.draft_model_path) if spec.draft_model_path is not None else None
    engine = Engine(spec.name, model, config, metrics, tiers, prefixes, draft)
    try:
        asyncio.run(_Worker(conn, engine, metrics).serve())
    finally:
        engine.close()
        tiers.close()  # queued disk writes land before the process exits
        if prefixes is not None:
            prefixes.close()
        if draft is not None:
            draft.close()
        model.close()


class _Worker:
    """The engine process's event loop: commands in, events out (sent from this loop's thread only)."""

    def __init__(self, conn: Connection, engine: Engine, metrics: Metrics) -> None:
        self.conn = conn
        self.engine = engine
        self.metrics = metrics
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def send(self, event: Event) -> None:
        with contextlib.suppress(OSError):  # the server is gone: the reader sees the pipe close and stops us
            self.conn.send(event)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[Command] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    command = self.conn.recv()
                except (EOFError, OSError):
                    command = Stop()
                loop.call_soon_threadsafe(commands.put_nowait, command)
                if isinstance(command, Stop):
                    return

        threading.Thread(target=read, name="engine-commands", daemon=True).start()
        stats = self.engine.stats()
        self.send(Ready(n_ctx=self.engine.n_ctx, kv_total=stats.kv_total, batch_slots=self.engine.batch_slots))
        snapshots = asyncio.create_task(self.snapshots())
        try:
            while not isinstance(command := await commands.get(), Stop):
                self.handle(command)
        finally:
            snapshots.cancel()
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(snapshots, *self.tasks.values(), return_exceptions=True)

    def handle(self, command: Command) -> None:
        if isinstance(command, Submit):
            self.tasks[command.key] = asyncio.create_task(self.run(command.key, command.request))
        elif isinstance(command, Abort):
            task = self.tasks.get(command.key)
            if task is not None:
                task.cancel()
        elif isinstance(command, Forget):
            self.engine.forget(command.name)
        elif isinstance(command, Extend):
            self.engine.extend(command.name, command.expires_at)
        elif isinstance(command, TierOf):
            self.send(TierAnswer(command.call, self.engine.tier_of(command.name)))

    async def run(self, key: int, request: GenerationRequest) -> None:
        def aborted(request_id: str, usage: Usage) -> None:
            self.send(Aborted(key, request_id, usage))

        try:
            async for item in self.engine.generate(replace(request, on_abort=aborted)):
                if isinstance(item, Usage):  # metrics as of this answer reach the server before the answer does
                    self.send(self.snapshot())
                self.send(Item(key, item))
        except MinimillError as exc:
            self.send(Failed(key, type(exc).__name__, exc.message, exc.param, exc.code,
                             getattr(exc, "retry_after", 1.0)))
        except Exception as exc:  # a bug must fail its request, not leave the server waiting for it
            log.exception("request %d failed inside the engine process", key)
            self.send(Failed(key, "EngineUnavailable", f"the engine failed on this request ({exc})",
                             code="engine_error"))
        finally:
            self.tasks.pop(key, None)

    def snapshot(self) -> Snapshot:
        return Snapshot(stats=self.engine.stats(), metrics=generate_latest(self.metrics.registry))

    async def snapshots(self) -> None:
        while True:
            self.send(self.snapshot())
            await asyncio.sleep(SNAPSHOT_SECONDS)


if __name__ == "__main__":
    # `python -m minimill.engine.worker FD`: FD is this end of the server's socket pair; the spec comes first.
    channel = Connection(int(sys.argv[1]))
    if not channel.poll(SPEC_TIMEOUT_SECONDS):
        sys.exit(2)
    engine_spec, level = channel.recv()
    main(channel, engine_spec, level)
