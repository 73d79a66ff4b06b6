"""The console's HTML routes: `GET /` and one page under `/console/` each, rendered on the server.

Every page is a whole HTML document (htmx swaps the body when a link is followed, so the browser keeps one
JavaScript context), plus one fragment, the batches table, that the batches page polls while a batch runs.
Tables are in the HTML itself, so they read without JavaScript; the playground and the buttons call the
public API from the browser with the key the login form kept in session storage.

Authentication: the door lets console paths through without a key and records the tenant it found, or
None; a page asked for without a valid key answers 401 with the login form instead of its content.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from minimill.errors import MinimillError
from minimill.runtime import Runtime
from minimill.serving.errors import describe
from minimill.web import views

HERE = Path(__file__).parent
STATIC_PATH = "/console/static"

View = Callable[[Runtime, str], Mapping[str, Any]]
# Defence in depth for pages that show untrusted text: scripts only from our own files (the JSON data blocks are
# not scripts), no framing, no third-party connections. Styles may be inline: htmx and Chart.js set them.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A tenant's pages are fetched with its key: never kept by the browser (back after logging out, a shared
    # machine) or by anything between.
    "Cache-Control": "no-store",
}


def static_files() -> StaticFiles:
    """The console's own assets (CSS, its script, htmx and Chart.js), served from the package."""
    return StaticFiles(directory=HERE / "static")


def console_router() -> APIRouter:
    """The console's routes, with their templates loaded once."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(usd=views.usd, when=views.when, share=views.share, seconds=views.seconds)
    router = APIRouter(include_in_schema=False)

    async def render(request: Request, template: str, page: str, view: View) -> Response:
        response = await _page(request, template, page, view)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _page(request: Request, template: str, page: str, view: View) -> Response:
        runtime: Runtime = request.app.state.runtime
        tenant: str | None = getattr(request.state, "tenant", None)
        base = {"page": page, "pages": views.PAGES, "keyed": bool(runtime.config.server.api_keys),
                "signed_in": tenant is not None, "static": STATIC_PATH}
        if tenant is None:
            error = getattr(request.state, "auth_error", None)
            return templates.TemplateResponse(request, "login.html", {**base, "title": "Log in", "error": error},
                                              status_code=401)
        try:
            context = await asyncio.to_thread(view, runtime, tenant)
        except MinimillError as exc:  # a page that cannot be shown says why, as a page
            code, _ = describe(exc)
            return templates.TemplateResponse(request, "error.html", {**base, "title": "Not shown",
                                                                      "message": exc.message}, status_code=code)
        return templates.TemplateResponse(request, template, {**base, **context})

    @router.get("/")
    async def root() -> RedirectResponse:
        """The console opens on the playground."""
        return RedirectResponse("/console/playground", status_code=307)

    @router.get("/console")
    async def console() -> RedirectResponse:
        """The console opens on the playground."""
        return RedirectResponse("/console/playground", status_code=307)

    @router.get("/console/playground", response_class=HTMLResponse)
    async def playground(request: Request) -> Response:
        """Try a prompt on any served model, `default` and `auto` included."""
        return await render(request, "playground.html", "playground", views.playground)

    @router.get("/console/requests", response_class=HTMLResponse)
    async def requests(request: Request, model: str | None = None, kind: str | None = None,
                       since: str | None = None, until: str | None = None,
                       offset: str | None = None, limit: str | None = None) -> Response:
        """The tenant's requests from the ledger, filtered and paginated on the server. The query is read
        after the key (as text: a bad one is a 400 page, not FastAPI's JSON), so a stranger gets the login form."""
        def view(runtime: Runtime, tenant: str) -> Mapping[str, Any]:
            query = views.RequestQuery.parse(model=model, kind=kind, since=since, until=until, offset=offset,
                                             limit=limit)
            return views.requests(runtime, tenant, query)

        return await render(request, "requests.html", "requests", view)

    @router.get("/console/requests/{entry_id:path}", response_class=HTMLResponse)
    async def request_detail(request: Request, entry_id: str) -> Response:
        """One request of the tenant's, every field the ledger holds (404 page for another tenant's). The id is
        the rest of the path, so any id (and any junk) reaches the page that says it is not found."""
        if not entry_id:
            return RedirectResponse("/console/requests", status_code=307)
        return await render(request, "request.html", "requests", lambda r, t: views.request_detail(r, t, entry_id))

    @router.get("/console/usage", response_class=HTMLResponse)
    async def usage(request: Request) -> Response:
        """Cost per day and per model, and what the same traffic would have cost without reuse."""
        return await render(request, "usage.html", "usage", views.usage)

    @router.get("/console/caches", response_class=HTMLResponse)
    async def caches(request: Request) -> Response:
        """Live prompt caches (extend, delete, create) and chat sessions."""
        return await render(request, "caches.html", "caches", views.caches)

    @router.get("/console/batches", response_class=HTMLResponse)
    async def batches(request: Request) -> Response:
        """Batch jobs with progress, counts, cost, downloads and cancel."""
        return await render(request, "batches.html", "batches", views.batches)

    @router.get("/console/batches/table", response_class=HTMLResponse)
    async def batches_table(request: Request) -> Response:
        """The batches table alone: what the batches page polls while a batch is unfinished."""
        return await render(request, "batches_table.html", "batches", views.batches)

    @router.get("/console/models", response_class=HTMLResponse)
    async def models(request: Request) -> Response:
        """The scoreboard as a price-vs-quality scatter and per-capability tables; prices per model."""
        return await render(request, "models.html", "models", views.models)

    @router.get("/console/{rest:path}", response_class=HTMLResponse)
    async def missing(request: Request, rest: str) -> Response:
        """Any other console path: a 404 page (a page, not the API's JSON error); `/console/` is the console."""
        if not rest:
            return RedirectResponse("/console/playground", status_code=307)
        return await render(request, "error.html", "", views.missing)

    return router
