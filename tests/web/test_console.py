"""The console as a user meets it, in Debian's Chromium: log in, the playground's streamed answer and its cost,
the request log against what the API returned, caches, a batch to its download, the scoreboard, a wrong key,
tenant isolation, untrusted text shown as text, keyboard and labels, a phone's width. Each page's screenshot is
saved under build/artifacts/console/."""

from __future__ import annotations

import json
import re
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
    assert page.locator("main .error").count() == 1 and page.locator("#request-detail").count() == 0
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


def test_keyboard_labels_and_a_phones_width(browser: Browser, console_server: Server, artifacts: Path) -> None:
    page = open_page(browser)
    log_in(page, console_server, ALICE)
    for path in ("/console/playground", "/console/requests", "/console/caches"):
        visit(page, console_server, path)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label')).map(el => el.id || el.name)""")
        assert unlabelled == [], f"{path}: inputs without a label: {unlabelled}"
    # The first Tab reaches the skip link, which moves focus to the page's content; nav links follow it.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('main') !== null")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.closest('header') !== null")
    phone = open_page(browser, width=390, height=844)
    log_in(phone, console_server, ALICE)
    wide = phone.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, f"the playground is {wide}px wide on a 390px screen"
    phone.screenshot(path=artifacts / "playground-phone.png", full_page=True)


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
