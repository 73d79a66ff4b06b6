"""The README's console screenshots: a server with the bundled ladder (open, on 127.0.0.1), a little traffic
(chats sharing a system line, a cache and its use, a session, a small batch), then each page in Debian's
Chromium at 1280x800, and the playground at a phone's width.

    python -m bench.console_screenshots --out docs/console
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from tests.api.conftest import cli_server
from tests.web.conftest import CHROMIUM, QUIET

MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m")
SYSTEM = "You clean CSV rows: names capitalised, cities in full, years in four digits. Reply with the row only. " * 3


def traffic(url: str) -> None:
    """Requests of every kind the console shows."""
    api = httpx.Client(base_url=url + "/v1", timeout=300)
    for row in ("john smith, nyc, 99", "mary jones, la, 2001", "li wei, sf, 87"):
        api.post("/chat/completions", json={"model": "smollm2-135m", "max_tokens": 16, "temperature": 0, "messages": [
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": row}]}).raise_for_status()
    prefix = "You answer questions about the weather in one short sentence."
    cache = api.post("/caches", json={"model": "qwen2.5-coder-0.5b", "prompt": prefix, "ttl_seconds": 3600}).json()
    api.post("/completions", json={"model": "qwen2.5-coder-0.5b", "prompt": prefix + " Is it sunny in Lisbon?",
                                   "max_tokens": 12, "cache_id": cache["id"]}).raise_for_status()
    history = [{"role": "user", "content": "Plan a three-day trip to Porto."}]
    api.post("/chat/completions", json={"model": "qwen2.5-coder-0.5b", "messages": history, "max_tokens": 24,
                                        "session_id": "trip-planner", "session_ttl_seconds": 600}).raise_for_status()
    lines = [{"custom_id": f"row-{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "smollm2-135m", "max_tokens": 12, "temperature": 0, "messages": [
                  {"role": "system", "content": SYSTEM}, {"role": "user", "content": f"row {n}, town {n}, 9{n}"}]}}
             for n in range(4)]
    uploaded = api.post("/files", files={"file": ("rows.jsonl", "\n".join(json.dumps(x) for x in lines))},
                        data={"purpose": "batch"}).json()
    batch = api.post("/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h"}).json()
    while api.get(f"/batches/{batch['id']}").json()["status"] not in ("completed", "failed"):
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/console"))
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = [flag for model in MODELS for flag in ("-m", model)]
    with cli_server(args.data_dir, *models) as server, sync_playwright() as playwright:
        traffic(server.url)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server.url + "/console/playground")
        page.get_by_label("Model", exact=True).select_option("qwen2.5-coder-1.5b")
        page.get_by_label("User message").fill("What is 17 × 23? Answer with the number.")
        page.get_by_role("button", name="Send").click()
        page.locator("#playground[data-done=yes]").wait_for(timeout=300_000)
        page.get_by_role("button", name="Show code").click()
        page.screenshot(path=args.out / "playground.png")
        for name in ("requests", "usage", "caches", "batches", "models"):
            page.goto(f"{server.url}/console/{name}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=args.out / f"{name}.png")
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(server.url + "/console/requests")
        phone.screenshot(path=args.out / "requests-phone.png")
        browser.close()


if __name__ == "__main__":
    main()
