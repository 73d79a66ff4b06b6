"""`create_app(runtime)`: the FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from minimill import __version__
from minimill.api import errors
from minimill.api.routes import billing, caches, chat, completions, info
from minimill.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    """An app serving `runtime`'s models; the caller owns (and closes) the runtime."""
    app = FastAPI(title="minimill", version=__version__)
    app.state.runtime = runtime
    errors.install(app)
    for module in (chat, completions, caches, billing, info):
        app.include_router(module.router)
    return app
