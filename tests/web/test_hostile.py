"""The console's pages against hostile input, over plain HTTP (no browser): bad query strings are a page, never a
500; whatever a URL or a tenant sent comes back escaped; every page and fragment is the login form without a
valid key; one tenant's ids never reach another's pages; the static files are only the console's own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import markupsafe
import pytest

from minimill.web import routes
from tests.api.conftest import Server
from tests.web.conftest import ALICE, BOB

MODEL = "smollm2-135m"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
PAGES = ("playground", "requests", "usage", "caches", "batches", "models")


@dataclass(frozen=True)
class Alice:
    """What alice has on the server: a request (in a session) and a cache."""

    request_id: str
    session: str
    cache_id: str


@pytest.fixture(scope="module")
def alice(console_server: Server) -> Iterator[Alice]:
    session = "alice-only-session-7f3a"
    answer = console_server.client(ALICE).chat.completions.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Alice's question."}],
        extra_body={"session_id": session})
    cache = httpx.post(f"{console_server.url}/v1/caches", headers=key(ALICE), timeout=60,
                       json={"model": MODEL, "prompt": "Alice's cached prefix. " * 8, "ttl_seconds": 300})
    assert cache.status_code == 200, cache.text
    yield Alice(answer.id, session, cache.json()["id"])
    httpx.delete(f"{console_server.url}/v1/caches/{cache.json()['id']}", headers=key(ALICE))


def key(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def get(server: Server, path: str, api_key: str | None = ALICE) -> httpx.Response:
    """`path` as given (httpx would re-encode a query string it is handed apart)."""
    return httpx.get(server.url + path, headers=key(api_key) if api_key else {}, timeout=60)


def assert_no_markup_from_input(body: str) -> None:
    """Nothing the URL carried came back as markup: no raw `<script>` (the page's own scripts are
    `<script src=...>` and `<script type="application/json">`), no injected image."""
    assert "<script>" not in body.lower() and "alert(1)</script>" not in body and "<img" not in body


def esc(text: str) -> str:
    """`text` as Jinja's autoescape writes it."""
    return str(markupsafe.escape(text))


WHOLE = "must be a whole number from 0 to 9223372036854775807, not"
# (path, status, what the page must show, as HTML)
BAD_QUERIES = [
    ("/console/requests?offset=-1", 400, esc(f"offset {WHOLE} '-1'")),
    ("/console/requests?offset=abc", 400, esc(f"offset {WHOLE} 'abc'")),
    ("/console/requests?offset=100000000000000000000", 400, esc(f"offset {WHOLE} '100000000000000000000'")),
    ("/console/requests?offset=1" + "0" * 5000, 400, esc(f"offset {WHOLE} '1{'0' * 39}'")),  # past int()'s digits
    ("/console/requests?offset=9223372036854775807", 200, "No requests this far back: "),
    ("/console/requests?offset=1000", 200, "No requests this far back: "),
    ("/console/requests?limit=100000", 400, esc("limit must be a whole number from 1 to 200, not '100000'")),
    ("/console/requests?limit=0", 400, esc("limit must be a whole number from 1 to 200, not '0'")),
    ("/console/requests?since=garbage", 400, esc("since must be a date as YYYY-MM-DD, not 'garbage'")),
    ("/console/requests?until=2026-13-45", 400, esc("until must be a date as YYYY-MM-DD, not '2026-13-45'")),
    ("/console/requests?until=9999-12-31", 200, "Requests 1–"),  # the last day there is: no date past it
    ("/console/requests?since=0001-01-01&until=0001-01-02", 200, "No requests match these filters yet."),
    ("/console/requests?since=2030-01-02&until=2030-01-01", 200, "No requests match these filters yet."),
    ("/console/requests?since=%3Cscript%3Ealert(1)%3C/script%3E", 400,
     esc(f"since must be a date as YYYY-MM-DD, not '{SCRIPT}'")),
    ("/console/requests?model=%3Cscript%3Ealert(1)%3C/script%3E", 200,
     f'<option value="{esc(SCRIPT)}" selected>{esc(SCRIPT)}</option>'),
    ("/console/requests?kind=%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E", 200,
     f'<option value="{esc(IMG)}" selected>{esc(IMG)}</option>'),
    ("/console/requests?model=%ff%fe", 200, '<option value="\ufffd\ufffd" selected>'),  # not UTF-8: replaced
    ("/console/requests/%3Cscript%3Ealert(1)%3C%2Fscript%3E", 404, esc(f"no request '{SCRIPT}'")),
    ("/console/requests/a/b%3Cimg%20src=x%3E", 404, esc("no request 'a/b<img src=x>'")),
    ("/console/requests/%ff", 404, esc("no request '\ufffd'")),
    ("/console/batches/table?poll=%3Cscript%3E", 200, "Batches, newest first"),
]


@pytest.mark.parametrize(("path", "status", "shown"), BAD_QUERIES, ids=[p[:60] for p, _, _ in BAD_QUERIES])
def test_bad_query_input_is_a_page_not_a_500(console_server: Server, alice: Alice, path: str, status: int,
                                             shown: str) -> None:
    page = get(console_server, path)
    assert page.status_code == status, page.text[-400:]
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert shown in page.text
    assert_no_markup_from_input(page.text)


def test_an_echoed_filter_is_the_selected_option_and_no_other(console_server: Server, alice: Alice) -> None:
    page = get(console_server, "/console/requests?model=%3Cscript%3Ealert(1)%3C/script%3E&kind=chat.completion")
    assert page.text.count(" selected>") == 2  # the unknown model, and the known kind
    assert '<option value="chat.completion" selected>chat.completion</option>' in page.text
    assert f'<option value="{esc(SCRIPT)}" selected>{esc(SCRIPT)}</option>' in page.text


# Every page and fragment the console serves, with a tenant's data behind it.
def console_paths(alice: Alice) -> list[str]:
    return [*(f"/console/{p}" for p in PAGES), "/console/batches/table", f"/console/requests/{alice.request_id}",
            f"/console/requests?model={MODEL}&limit=5", "/console/requests?offset=-1", "/console/requests/nope"]


NO_KEY = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."


@pytest.mark.parametrize(("authorization", "error"), [
    (None, None), (f"Bearer {ALICE}x", "Incorrect API key provided."), (f"Basic {ALICE}", NO_KEY),
    (f"bearer   {BOB.upper()}", "Incorrect API key provided."), (ALICE, NO_KEY),
])
def test_every_page_is_the_login_form_without_a_valid_key(console_server: Server, alice: Alice,
                                                          authorization: str | None, error: str | None) -> None:
    for path in console_paths(alice):
        page = httpx.get(console_server.url + path, headers={"Authorization": authorization} if authorization else {})
        assert page.status_code == 401, path
        assert 'id="login-form"' in page.text and "<table" not in page.text, path
        for secret in (alice.request_id, alice.session, alice.cache_id, MODEL):
            assert secret not in page.text, (path, secret)
        assert ('id="login-error"' in page.text) == (error is not None), path
        if error is not None:
            assert f'<p class="error" role="alert" id="login-error">{esc(error)}</p>' in page.text, path
        assert 'id="logout"' not in page.text  # nobody to log out
        assert page.headers["cache-control"] == "no-store"


def test_the_door_and_the_console_entrances(console_server: Server) -> None:
    for path in ("/", "/console", "/console/"):
        assert httpx.get(console_server.url + path).status_code == 307
        for api_key, status in ((None, 401), (ALICE, 200)):
            landed = httpx.get(console_server.url + path, headers=key(api_key) if api_key else {},
                               follow_redirects=True)
            assert (landed.status_code, str(landed.url)) == (status, console_server.url + "/console/playground")
            assert ('id="login-form"' in landed.text) == (api_key is None)
    assert get(console_server, "/console/requests/", None).headers["location"] == "/console/requests"
    # The API itself: OpenAI's JSON 401, with or without a console-looking prefix.
    for path in ("/v1/models", "/v1/usage", "/v1/caches"):
        refused = httpx.get(console_server.url + path)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key", path
    sideways = httpx.get(console_server.url + "/console/%2e%2e/v1/usage")  # the door lets /console/ through
    assert sideways.status_code == 401 and "login-form" in sideways.text and "total" not in sideways.text
    keyed = httpx.get(console_server.url + "/console/%2e%2e/v1/usage", headers=key(ALICE))  # the console's 404
    assert keyed.status_code == 404 and "no such page" in keyed.text and "total" not in keyed.text


def test_every_page_carries_the_security_headers(console_server: Server, alice: Alice) -> None:
    for path in console_paths(alice):
        for api_key in (ALICE, None):
            page = get(console_server, path, api_key)
            for name, value in routes.SECURITY_HEADERS.items():
                assert page.headers[name] == value, (path, name)
    assert "script-src 'self';" in routes.SECURITY_HEADERS["Content-Security-Policy"]  # no inline scripts


def test_the_static_files_are_the_consoles_own_and_nothing_else(console_server: Server) -> None:
    served = Path(routes.HERE / "static")
    assert sorted(p.name for p in served.iterdir()) == ["THIRD_PARTY.txt", "chart.umd.min.js", "console.css",
                                                          "console.js", "htmx.min.js"]
    script = get(console_server, "/console/static/console.js", None)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert ".innerHTML" not in script.text and "insertAdjacentHTML" not in script.text  # text only
    for path in ("/console/static/", "/console/static/%2e%2e/routes.py", "/console/static/..%2froutes.py",
                 "/console/static/%2e%2e/%2e%2e/api/door.py", "/console/static/%2e%2e/templates/base.html"):
        refused = get(console_server, path, None)
        assert refused.status_code == 404 and "import" not in refused.text and "{%" not in refused.text, path


def test_one_tenant_never_reaches_anothers_ids(console_server: Server, alice: Alice) -> None:
    for path in console_paths(alice):
        page = get(console_server, path, BOB)
        for secret in (alice.request_id, alice.session, alice.cache_id):
            assert secret not in page.text.replace(f"no request &#39;{alice.request_id}&#39;", ""), (path, secret)
    # Another tenant's request reads exactly as one that does not exist.
    theirs = get(console_server, f"/console/requests/{alice.request_id}", BOB)
    assert theirs.status_code == 404
    assert f'<p class="error" id="error-message">no request &#39;{alice.request_id}&#39;</p>' in theirs.text
    mine = get(console_server, f"/console/requests/{alice.request_id}", ALICE)
    assert mine.status_code == 200 and alice.session in mine.text
    caches = get(console_server, "/console/caches", ALICE)
    assert alice.session in caches.text and alice.cache_id in caches.text


def test_every_row_of_the_log_links_to_its_own_detail(console_server: Server, alice: Alice) -> None:
    # Ledger ids carry ':' and '.' (a cache's `<id>:create` and `<id>:extend:<time>` rows): each link, as the page
    # encodes it, opens that row.
    extended = httpx.patch(f"{console_server.url}/v1/caches/{alice.cache_id}", headers=key(ALICE),
                           json={"ttl_seconds": 600})
    assert extended.status_code == 200, extended.text
    log = get(console_server, "/console/requests?limit=200")
    rows = re.findall(r'<tr data-id="([^"]+)">\s*<td><a href="([^"]+)">', log.text)
    ids = [markupsafe.Markup(row_id).unescape() for row_id, _ in rows]
    assert f"{alice.cache_id}:create" in ids and any(i.startswith(f"{alice.cache_id}:extend:") for i in ids)
    assert alice.request_id in ids
    for row_id, href in rows:
        detail = get(console_server, markupsafe.Markup(href).unescape())
        assert detail.status_code == 200, href
        assert f"<code>{row_id}</code>" in detail.text, href
