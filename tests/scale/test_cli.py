"""`minimill serve --replicas 2` as a user runs it: a local Ray instance, one endpoint, a clean stop."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from minimill.models.catalogue import SMALLEST
from tests.api.conftest import cli_server

pytest.importorskip("ray")


def test_serve_with_replicas_answers_on_one_endpoint_and_stops_cleanly(tmp_path: Path) -> None:
    with cli_server(tmp_path, "--replicas", "2", "--replica-cpus", "0.5") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)
        seen = set()
        deadline = time.monotonic() + 120  # the ingress's router may learn of the second replica after /health
        i = 0
        while len(seen) < 2:  # short prompts spread over both
            assert time.monotonic() < deadline, seen
            raw = client.chat.completions.with_raw_response.create(
                model=SMALLEST, messages=[{"role": "user", "content": f"Hi {i}"}], max_tokens=2)
            assert raw.parse().usage.completion_tokens == 2
            seen.add(raw.headers["x-minimill-replica"])
            i += 1
    assert server.process.returncode == 0, server.output
    assert "starting 2 replica(s)" in server.output[0]
