"""`create_app(runtime)`: the FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from minimill import __version__
from minimill.api import errors
from minimill.api.door import Door, DoorLimits
from minimill.api.routes import batches, billing, caches, chat, completions, files, info, tokens
from minimill.runtime import Runtime
from minimill.serving.batch_lines import batch_runner
from minimill.web.routes import STATIC_PATH, console_router, static_files

MULTIPART_OVERHEAD_BYTES = 64 * 1024


def create_app(runtime: Runtime, runner_id: str | None = None) -> FastAPI:
    """An app serving `runtime`'s models; the caller owns (and closes) the runtime. While it runs, a
    batch runner (named `runner_id` on batch leases, see `batch_runner`) works through the Batch API's queue
    (resuming what a previous run left)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = batch_runner(runtime, runner_id)
        app.state.batch_runner = runner
        task = asyncio.create_task(runner.run(), name="batch-runner")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for upstream in runtime.upstreams.values():
                await upstream.close()

    app = FastAPI(title="minimill", version=__version__, lifespan=lifespan)
    app.state.runtime = runtime
    config = runtime.config
    # An upload's multipart framing adds a little to the file itself.
    limits = DoorLimits(max_body_bytes=config.server.max_body_bytes,
                        max_upload_bytes=config.batch.max_file_bytes + MULTIPART_OVERHEAD_BYTES)
    app.add_middleware(Door, limits=limits, keys=config.server.api_keys)
    errors.install(app)
    for module in (chat, completions, tokens, caches, files, batches, billing, info):
        app.include_router(module.router)
    app.mount(STATIC_PATH, static_files(), name="console-static")  # before the console's catch-all 404 page
    app.include_router(console_router())
    return app
