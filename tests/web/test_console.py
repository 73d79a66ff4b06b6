"""The console as a user meets it, in Debian's Chromium: log in, the playground's streamed answer and its cost,
the request log against what the API returned, caches, a batch to its download, the scoreboard, a wrong key,
tenant isolation, untrusted text shown as text, keyboard, labels and focus on every page, every page at a phone's
width, back and forward and logging out, the API's errors shown as text, "show code" read back as Python and shell.
Each page's screenshot is saved under build/artifacts/console/."""

from __future__ import annotations

import ast
import json
import re
import shlex
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.api.conftest import Server, serve
from tests.web.conftest import ALICE, BOB, log_in, open_page, visit

MODEL = "smollm2-135m"
SHOUT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def cell(page: Page, row_id: str, column: str) -> str:
    return page.locator(f'tr[data-id="{row_id}"] [data-col="{column}"]').inner_text().strip()


def test_a_wrong_key_is_refused_and_nothing_is_shown(browser: Browser, console_server: Server,
                                                     artifacts: Path) -> None:
    page = open_page(browser)
    response = page.goto(console_server.url + "/console/requests")
    assert response is not None and response.status == 401
    page.screenshot(path=artifacts / "login.png")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_contain_text("Incorrect API key")
    assert page.locator("#requests-table").count() == 0
    assert page.evaluate("sessionStorage.getItem('minimill.key')") is None  # a refused key is not kept
    # The same page without a browser: 401 and the form, no table.
    plain = httpx.get(console_server.url + "/console/requests", headers={"Authorization": "Bearer nope"})
    assert plain.status_code == 401 and "login-form" in plain.text and "requests-table" not in plain.text
    assert "script-src 'self';" in plain.headers["content-security-policy"]
    # The API itself still refuses with OpenAI's error shape.
    api = httpx.get(console_server.url + "/v1/models")
    assert api.status_code == 401 and api.json()["error"]["code"] == "invalid_api_key"


def test_playground_streams_an_answer_with_its_cost_and_the_log_has_it(browser: Browser, console_server: Server,
                                                                        artifacts: Path) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE)
    page.get_by_label("Model", exact=True).select_option(MODEL)
    page.get_by_label("User message").fill("Name three colours.")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Send").click()
    page.locator("#playground[data-done=yes]").wait_for()
    answer = page.locator("#pg-answer").inner_text()
    assert answer.strip(), "no streamed text"
    prompt = int(page.locator("#pg-usage-prompt").inner_text())
    completion = int(page.locator("#pg-usage-completion").inner_text())
    assert prompt > 0 and 0 < completion <= 12
    assert page.locator("#pg-usage-cost").inner_text().startswith("$")
    page.get_by_role("button", name="Show code").click()
    assert "from openai import OpenAI" in page.locator("#pg-code-python").inner_text()
    assert '"model": "smollm2-135m"' in page.locator("#pg-code-curl").inner_text()
    page.screenshot(path=artifacts / "playground.png", full_page=True)

    # The request log, opened by keyboard-free navigation: the newest row is the playground's request.
    page.get_by_role("link", name="Requests").click()
    first = page.locator("#requests-table tbody tr").first
    first.wait_for()
    row_id = first.get_attribute("data-id")
    assert row_id is not None and row_id.startswith("chatcmpl-")
    assert (int(cell(page, row_id, "prompt")), int(cell(page, row_id, "completion"))) == (prompt, completion)


def python_call(code: str) -> dict[str, object]:
    """The keyword arguments of the `create(...)` call in the playground's Python code, read as Python reads them."""
    call = next(node for node in ast.walk(ast.parse(code))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "create")
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}


def test_show_code_is_the_call_the_playground_makes(browser: Browser, console_server: Server) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE)
    tools = [{"type": "function", "function": {"name": "check", "strict": True, "description": "true, false or null",
                                               "parameters": {"type": "object", "properties": {}, "required": []}}}]
    user = 'Is it true or false that null is "none"? It\'s $HOME, `id`, \\n and ünïcode.'
    page.get_by_label("System message").fill("Say true or false.")
    page.get_by_label("User message").fill(user)
    page.locator("details summary").click()
    page.get_by_label("Tools (JSON list of OpenAI tool definitions)").fill(json.dumps(tools))
    page.get_by_label("Tool choice").select_option("auto")
    page.get_by_label("session_id").fill("s-1")
    page.get_by_role("button", name="Show code").click()
    sent = {"model": "default", "max_tokens": 64, "temperature": 0, "top_p": 1, "tools": tools, "tool_choice": "auto",
            "messages": [{"role": "system", "content": "Say true or false."}, {"role": "user", "content": user}]}
    assert python_call(page.locator("#pg-code-python").inner_text()) == {**sent, "extra_body": {"session_id": "s-1"}}
    curl = shlex.split(page.locator("#pg-code-curl").inner_text().replace("\\\n", " "))  # as a shell reads it
    assert curl[:2] == ["curl", f"{console_server.url}/v1/chat/completions"]
    assert json.loads(curl[curl.index("-d") + 1]) == {**sent, "session_id": "s-1"}


def test_the_playground_with_auto_and_with_errors(browser: Browser, console_server: Server) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE)
    # `auto` on a one-model route streams that model's answer; its one attempt is still listed.
    page.get_by_label("Model", exact=True).select_option("auto")
    expect(page.locator("#pg-model-reason")).to_contain_text("the cheapest served model expected to pass")
    page.get_by_label("Max tokens").fill("4")
    page.get_by_role("button", name="Send").click()
    page.locator("#playground[data-done=yes]").wait_for()
    expect(page.locator("#pg-usage-model")).to_have_text(MODEL)
    attempts = page.locator("#pg-attempts tbody tr")
    expect(attempts).to_have_count(1)
    cells = attempts.first.locator("td").all_inner_texts()
    assert cells[:2] == [MODEL, "not checked"] and cells[3].startswith("$")
    assert page.locator("#pg-usage-cost").inner_text().startswith(cells[3] + " (")  # the whole cost was its
    # The API's refusal is shown as the API wrote it, and the form can be sent again.
    page.locator("details summary").click()
    page.get_by_label("Tool choice").select_option("required")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pg-error")).to_have_text("'tool_choice' is only allowed when 'tools' are specified")
    assert page.locator("#pg-usage").is_hidden() and page.locator("#pg-attempts").is_hidden()
    expect(page.locator("#pg-send")).to_be_enabled()
    # Tools that are not JSON are caught before anything is sent.
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    page.get_by_label("Tools (JSON list of OpenAI tool definitions)").fill('[{"type": "function",')
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pg-error")).to_contain_text("Tools: ")
    assert sent == []


def test_the_request_log_shows_what_the_api_returned_filtered_and_paged(browser: Browser,
                                                                        console_server: Server,
                                                                        artifacts: Path) -> None:
    client = console_server.client(ALICE)
    system = "You are terse. Answer in one short sentence about colours and nothing else, please. " * 6
    answers = [client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": f"Question {n}?"}]) for n in range(3)]
    assert answers[-1].usage is not None and answers[-1].usage.prompt_tokens_details is not None
    assert answers[-1].usage.prompt_tokens_details.cached_tokens > 0  # the shared system line was reused
    page = open_page(browser)
    log_in(page, console_server, ALICE, "/console/requests")
    for answer in answers:
        usage = answer.usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert int(cell(page, answer.id, "prompt")) == usage.prompt_tokens
        assert int(cell(page, answer.id, "cached")) == usage.prompt_tokens_details.cached_tokens
        assert int(cell(page, answer.id, "completion")) == usage.completion_tokens
    page.screenshot(path=artifacts / "requests.png", full_page=True)

    # Server-side paging: two rows a page, the newest first, and the next page goes on from there.
    visit(page, console_server, "/console/requests?limit=2")
    ids = page.locator("#requests-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == [answers[2].id, answers[1].id]
    page.get_by_role("link", name="Older →").click()
    expect(page.locator("#requests-table tbody tr").first).to_have_attribute("data-id", answers[0].id)
    # A filter with no match, and the detail of one request.
    visit(page, console_server, "/console/requests?kind=text_completion")
    expect(page.locator("#requests-count")).to_contain_text("No requests match")
    visit(page, console_server, f"/console/requests/{answers[0].id}")
    assert answers[0].usage is not None
    expect(page.locator("#request-detail [data-col=prompt]")).to_have_text(str(answers[0].usage.prompt_tokens))
    page.screenshot(path=artifacts / "request.png", full_page=True)

    # Readable without JavaScript: the table is in the HTML the server sends.
    plain = httpx.get(console_server.url + "/console/requests", headers={"Authorization": f"Bearer {ALICE}"})
    assert plain.status_code == 200 and answers[0].id in plain.text


def test_create_use_and_delete_a_cache(browser: Browser, console_server: Server, artifacts: Path) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE, "/console/caches")
    prefix = ("You are a careful assistant who answers questions about the weather in short sentences. " * 4).strip()
    page.get_by_label("Prefix (text to prefill once and keep)").fill(prefix)
    page.get_by_label("Keep for (seconds)").fill("300")
    page.get_by_role("button", name="Create").click()
    row = page.locator("#caches-table tbody tr[data-id]").first
    row.wait_for()
    cache_id = row.get_attribute("data-id")
    assert cache_id is not None
    hit = console_server.client(ALICE).completions.create(model=MODEL, prompt=prefix + " Is it raining?", max_tokens=2,
                                                          extra_body={"cache_id": cache_id})
    assert hit.usage is not None
    visit(page, console_server, "/console/caches")
    expect(page.locator(f'tr[data-id="{cache_id}"] [data-col=hits]')).to_have_text("1")
    page.screenshot(path=artifacts / "caches.png", full_page=True)
    ttl = page.locator(f'tr[data-id="{cache_id}"] [data-col=ttl]')
    expect(ttl).to_have_text(re.compile(r"^(\d+ s|[45] min)$"))  # kept for 300 s
    page.locator(f'form[data-action=extend-cache][data-id="{cache_id}"] input').fill("7300")
    page.locator(f'form[data-action=extend-cache][data-id="{cache_id}"] button').click()
    expect(ttl).to_have_text("2.0 h")
    page.locator(f'button[data-action=delete-cache][data-id="{cache_id}"]').click()
    expect(page.locator(f'tr[data-id="{cache_id}"]')).to_have_count(0)
    gone = httpx.get(f"{console_server.url}/v1/caches/{cache_id}", headers={"Authorization": f"Bearer {ALICE}"})
    assert gone.status_code == 404


def test_a_batch_finishes_on_screen_and_its_output_downloads(browser: Browser, console_server: Server,
                                                            artifacts: Path) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE, "/console/batches")
    client = console_server.client(ALICE)
    lines = [{"custom_id": f"row-{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "max_tokens": 4, "temperature": 0,
                       "messages": [{"role": "user", "content": f"Count to {n + 2}."}]}} for n in range(3)]
    uploaded = client.files.create(file=("in.jsonl", "\n".join(json.dumps(x) for x in lines).encode()),
                                   purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    visit(page, console_server, "/console/batches")
    # The table polls while the batch runs: no reload needed to see it finish.
    expect(page.locator(f'tr[data-id="{batch.id}"] [data-col=status]')).to_have_text("completed", timeout=180_000)
    page.screenshot(path=artifacts / "batches.png", full_page=True)
    with page.expect_download() as info:
        page.locator(f'tr[data-id="{batch.id}"] a', has_text="Output").click()
    saved = info.value.path()
    rows = [json.loads(line) for line in Path(saved).read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == ["row-0", "row-1", "row-2"]
    assert all(r["response"]["status_code"] == 200 for r in rows)

    # A long batch, cancelled from its row.
    many = [{**lines[0], "custom_id": f"long-{n}", "body": {**lines[0]["body"], "max_tokens": 64}} for n in range(40)]
    uploaded = client.files.create(file=("long.jsonl", "\n".join(json.dumps(x) for x in many).encode()),
                                   purpose="batch")
    long = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    visit(page, console_server, "/console/batches")
    page.locator(f'button[data-action=cancel-batch][data-id="{long.id}"]').click()
    expect(page.locator(f'tr[data-id="{long.id}"] [data-col=status]')).to_have_text(re.compile("cancell(ing|ed)"))
    assert client.batches.retrieve(long.id).status in ("cancelling", "cancelled")


def test_usage_and_savings(browser: Browser, console_server: Server, artifacts: Path) -> None:
    client = console_server.client(ALICE)
    system = "You summarise weather reports for pilots in exactly one line, no more, no less. " * 6
    for n in range(3):
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[
            {"role": "system", "content": system}, {"role": "user", "content": f"Report {n}."}])
    page = open_page(browser)
    log_in(page, console_server, ALICE, "/console/usage")
    spent = float(page.locator("#usage-cost").inner_text().lstrip("$").replace(",", ""))
    without = float(page.locator("#usage-without").inner_text().lstrip("$").replace(",", ""))
    assert spent > 0 and spent < without  # the system line was reused: cheaper than with no reuse
    total = httpx.get(console_server.url + "/v1/usage", headers={"Authorization": f"Bearer {ALICE}"}).json()["total"]
    assert abs(spent - total["cost"]) <= 1e-6 * max(1.0, total["cost"])
    assert page.locator("canvas#chart-per-day").count() == 1
    page.wait_for_function("() => Chart.getChart('chart-per-day') !== undefined")
    page.screenshot(path=artifacts / "usage.png", full_page=True)


def test_the_scoreboard_marks_the_default(browser: Browser, console_server: Server, artifacts: Path) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE, "/console/models")
    expect(page.locator("#default-model")).to_contain_text(MODEL)
    expect(page.locator("#models-table tr.default")).to_contain_text("default")
    assert page.locator("#capabilities tbody tr").count() >= 12  # a row per suite
    assert re.search(r"\d\.\d\d \(\d\.\d\d–\d\.\d\d, n=40\)", page.locator("#capabilities").inner_text())
    page.wait_for_function("() => Chart.getChart('chart-scoreboard') !== undefined")
    page.screenshot(path=artifacts / "models.png", full_page=True)


def test_one_tenant_never_sees_anothers_rows(browser: Browser, console_server: Server) -> None:
    alice = console_server.client(ALICE)
    mine = alice.chat.completions.create(model=MODEL, max_tokens=2,
                                         messages=[{"role": "user", "content": "Only for alice."}])
    cache = httpx.post(f"{console_server.url}/v1/caches", headers={"Authorization": f"Bearer {ALICE}"},
                       json={"model": MODEL, "prompt": "Alice's own prefix. " * 8, "ttl_seconds": 300}).json()
    batches = [b.id for b in alice.batches.list()]
    page = open_page(browser)
    log_in(page, console_server, BOB, "/console/requests")
    assert mine.id not in page.content()
    visit(page, console_server, f"/console/requests/{mine.id}")
    expect(page.locator("#error-message")).to_have_text(f"no request '{mine.id}'")
    assert page.locator("#request-detail").count() == 0
    visit(page, console_server, "/console/caches")
    assert cache["id"] not in page.content()
    visit(page, console_server, "/console/batches")
    assert not [b for b in batches if b in page.content()]
    visit(page, console_server, "/console/usage")
    expect(page.locator("#usage-cost")).to_have_text("$0")


def test_untrusted_text_is_shown_as_text(browser: Browser, console_server: Server) -> None:
    # A session id is the client's own string and the sessions table shows it.
    console_server.client(ALICE).chat.completions.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": SHOUT}], extra_body={"session_id": SHOUT})
    page = open_page(browser)
    log_in(page, console_server, ALICE, "/console/caches")
    expect(page.locator("#sessions-table")).to_contain_text("<script>window.__pwned = 1</script>")
    # The playground writes a streamed answer as text too (the answer is made up here, the page's code is real).
    visit(page, console_server, "/console/playground")
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
             "choices": [{"index": 0, "delta": {"content": SHOUT}, "finish_reason": None}]}
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"))
    page.get_by_role("button", name="Send").click()
    page.locator("#playground[data-done=yes]").wait_for()
    expect(page.locator("#pg-answer")).to_have_text(SHOUT)
    assert page.locator("#pg-answer img, #pg-answer script").count() == 0
    time.sleep(0.2)
    assert page.evaluate("window.__pwned") is None


PAGES = {"playground": "Playground", "requests": "Requests", "usage": "Usage and savings",
         "caches": "Caches and sessions", "batches": "Batches", "models": "Models"}
# Each a list of what is wrong on the page, empty when nothing is.
UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label')).map(el => el.id || el.name)"""
NAMELESS_BUTTONS = """() => [...document.querySelectorAll('button')]
    .filter(b => !(b.getAttribute('aria-label') || b.textContent).trim()).map(b => b.outerHTML)"""
UNNAMED_TABLES = """() => [...document.querySelectorAll('table')]
    .filter(t => !(t.caption && t.caption.textContent.trim())
                 && !(document.getElementById(t.getAttribute('aria-labelledby')) || {}).textContent)
    .map(t => t.id)"""


def test_every_page_is_labelled_named_and_marks_where_you_are(browser: Browser, console_server: Server) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE)
    for slug, name in PAGES.items():  # by the nav's links (htmx swaps the body), the page shown first included
        with page.expect_response(f"{console_server.url}/console/{slug}") as answered:
            page.get_by_role("navigation", name="Console").get_by_role("link", name=name, exact=True).click()
        assert answered.value.status == 200
        expect(page.locator("main h1")).to_have_text(name)
        assert page.url == f"{console_server.url}/console/{slug}"
        current = page.locator("nav a[aria-current=page]")
        assert current.count() == 1 and current.inner_text() == name, slug
        assert page.evaluate(UNLABELLED) == [], f"{slug}: inputs without a label"
        assert page.evaluate(NAMELESS_BUTTONS) == [], f"{slug}: buttons without a name"
        assert page.evaluate(UNNAMED_TABLES) == [], f"{slug}: tables without a caption"
    visit(page, console_server, "/console/caches")
    # The first Tab reaches the skip link, which moves focus to the page's content; nav links follow it.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('main') !== null")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.closest('header') !== null")
    # Focus is visible: the keyboard's focus ring on every stop, from the top of the page to its end.
    visit(page, console_server, "/console/caches")
    stops = []
    for _ in range(40):
        page.keyboard.press("Tab")
        stop = page.evaluate("""() => { const focused = document.activeElement, style = getComputedStyle(focused);
            return focused === document.body ? null
              : [focused.textContent.trim() || focused.id, style.outlineStyle, style.outlineWidth]; }""")
        if stop is None:
            break
        stops.append(stop)
    assert [name for name, _, _ in stops[:9]] == ["Skip to content", "minimill", *PAGES.values(), "Log out"]
    assert len(stops) >= 13 and all(ring == ["solid", "3px"] for _, *ring in stops), stops


def test_no_page_scrolls_sideways_on_a_phone(browser: Browser, console_server: Server, artifacts: Path) -> None:
    # Long unbroken ids, as a client may choose them: a session in a request's detail and the sessions table.
    long_session = "session-" + "x" * 200
    answer = console_server.client(ALICE).chat.completions.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi."}],
        extra_body={"session_id": long_session})
    cache = httpx.post(f"{console_server.url}/v1/caches", headers={"Authorization": f"Bearer {ALICE}"},
                       json={"model": MODEL, "prompt": "A phone's prefix. " * 8, "ttl_seconds": 300}).json()
    phone = open_page(browser, width=390, height=844)
    log_in(phone, console_server, ALICE)
    for path in [*(f"/console/{slug}" for slug in PAGES), f"/console/requests/{answer.id}",
                 "/console/requests?offset=1000", "/console/requests?since=nonsense"]:
        visit(phone, console_server, path)
        wide = phone.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"{path} is {wide}px wide on a 390px screen"
    # ... with the long ids on them.
    visit(phone, console_server, f"/console/requests/{answer.id}")
    assert long_session in phone.locator("#request-detail").inner_text().replace("\n", "")
    visit(phone, console_server, "/console/caches")
    assert phone.locator(f'tr[data-id="{cache["id"]}"]').count() == 1
    assert long_session in phone.locator("#sessions-table").inner_text()
    visit(phone, console_server, "/console/playground")
    phone.screenshot(path=artifacts / "playground-phone.png", full_page=True)
    httpx.delete(f"{console_server.url}/v1/caches/{cache['id']}", headers={"Authorization": f"Bearer {ALICE}"})


def test_back_forward_and_log_out(browser: Browser, console_server: Server) -> None:
    console_server.client(ALICE).chat.completions.create(model=MODEL, max_tokens=2,  # usage to chart
                                                         messages=[{"role": "user", "content": "Hi."}])
    page = open_page(browser)
    log_in(page, console_server, ALICE)
    page.get_by_role("link", name="Requests", exact=True).click()
    expect(page.locator("main h1")).to_have_text("Requests")
    page.get_by_role("link", name="Usage and savings").click()
    expect(page.locator("main h1")).to_have_text("Usage and savings")
    # Nothing is kept in history (the pages hold a tenant's data): back fetches the page again, with the key.
    page.go_back()
    expect(page.locator("main h1")).to_have_text("Requests")
    assert page.url == f"{console_server.url}/console/requests"
    page.go_forward()
    expect(page.locator("main h1")).to_have_text("Usage and savings")
    page.wait_for_function("() => Chart.getChart('chart-per-day') !== undefined")  # drawn again
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-form")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('minimill.key')") is None
    assert page.locator("#logout").count() == 0 and page.locator("#usage-table").count() == 0
    # The page before is not shown to whoever sits down next: back asks for it with no key, is refused, and the
    # console asks again to swap the login page in (wait for that last answer before looking).
    requests_page = f"{console_server.url}/console/requests"
    with page.expect_response(lambda r: r.url == requests_page and "hx-history-restore-request" not in r.request.headers
                              ) as asked_again:
        page.go_back()
    assert asked_again.value.status == 401 and "authorization" not in asked_again.value.request.headers
    expect(page.locator("main h1")).to_have_text("Log in")
    assert page.url == f"{console_server.url}/console/requests" and page.locator("#requests-table").count() == 0


def test_errors_from_the_api_are_shown_as_text(browser: Browser, console_server: Server) -> None:
    cache = httpx.post(f"{console_server.url}/v1/caches", headers={"Authorization": f"Bearer {ALICE}"},
                       json={"model": MODEL, "prompt": "Errors' prefix. " * 8, "ttl_seconds": 300}).json()
    page = open_page(browser)
    log_in(page, console_server, ALICE)
    # Reached by a link (htmx swaps the body, not its attributes): a refused delete still says why, as text.
    page.get_by_role("link", name="Caches and sessions").click()
    refusal = {"error": {"message": SHOUT, "type": "invalid_request_error", "param": None, "code": None}}
    page.route("**/v1/caches/*", lambda route: route.fulfill(status=409, json=refusal))
    page.locator(f'button[data-action=delete-cache][data-id="{cache["id"]}"]').click()
    expect(page.locator("#page-error")).to_have_text(SHOUT)
    assert page.locator("#page-error img, #page-error script").count() == 0
    page.unroute("**/v1/caches/*")
    # An answer that is not one of the console's pages (FastAPI's JSON 404 quotes the path) is never swapped in.
    page.evaluate("htmx.ajax('GET', '/v1/gone<img id=injected src=x>', {target: 'body', swap: 'innerHTML'})")
    expect(page.locator("#page-error")).to_have_text("GET /v1/gone<img id=injected src=x>: Not Found")
    assert page.locator("#injected").count() == 0
    expect(page.locator("main h1")).to_have_text("Caches and sessions")
    # A bad filter in a link is the console's own 400 page, its message as text.
    visit(page, console_server, "/console/requests?until=<img id=injected src=x>")
    expect(page.locator("#error-message")).to_have_text("until must be a date as YYYY-MM-DD, not "
                                                        "'<img id=injected src=x>'")
    assert page.locator("#injected").count() == 0
    # A filter a link names is the one the form shows, even for a model the log does not have.
    visit(page, console_server, f"/console/requests?model={SHOUT}&kind=chat.completion")
    assert page.locator("#f-model").input_value() == SHOUT
    assert page.locator("#f-kind").input_value() == "chat.completion"
    expect(page.locator("#requests-count")).to_have_text("No requests match these filters yet.")
    time.sleep(0.2)
    assert page.evaluate("window.__pwned") is None
    httpx.delete(f"{console_server.url}/v1/caches/{cache['id']}", headers={"Authorization": f"Bearer {ALICE}"})


def test_an_open_server_needs_no_login_and_reads_without_javascript(browser: Browser,
                                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    for server in serve(tmp_path_factory.mktemp("open"), kv_size=2048, max_seqs=2):
        answer = server.client().chat.completions.create(model=MODEL, max_tokens=2,
                                                         messages=[{"role": "user", "content": "Hi."}])
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        response = page.goto(server.url + "/")
        assert response is not None and response.status == 200 and page.url.endswith("/console/playground")
        assert page.locator("#login").count() == 0
        page.goto(server.url + "/console/requests")
        assert answer.usage is not None
        row = page.locator(f'tr[data-id="{answer.id}"]')
        assert row.locator("[data-col=prompt]").inner_text() == str(answer.usage.prompt_tokens)
        assert row.locator("[data-col=completion]").inner_text() == str(answer.usage.completion_tokens)
        page.goto(server.url + "/console/models")
        assert page.locator("#capabilities tbody tr").count() >= 12
        context.close()


def test_an_unknown_console_path_is_a_404_page(console_server: Server) -> None:
    answer = httpx.get(console_server.url + "/console/no-such-page", headers={"Authorization": f"Bearer {ALICE}"})
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    assert "no such page" in answer.text and "script-src 'self';" in answer.headers["content-security-policy"]
    refused = httpx.get(console_server.url + "/console/no-such-page")
    assert refused.status_code == 401 and "login-form" in refused.text  # behind the login like any page
