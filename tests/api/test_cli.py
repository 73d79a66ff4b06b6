"""The real `minimill serve` and `minimill models` commands, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from tests.api.conftest import free_port


def test_serve_prints_where_what_and_capacity_then_answers(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MINIMILL_MAX_SEQS": "4", "COLUMNS": "200"}
    command = [sys.executable, "-m", "minimill.cli", "serve", "--port", str(port), "--kv-size", "1024",
               "--threads", "1", "--data-dir", str(tmp_path), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        reply = client.completions.create(model="smollm2-135m", prompt="Hello", max_tokens=3, temperature=0)
        assert reply.usage is not None and reply.usage.completion_tokens == 3
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["models"]["smollm2-135m"]["kv_total"] == 1024
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/v1" in output
    assert "smollm2-135m" in output and "KV capacity 1024 tokens" in output and "4 sequences" in output


def test_models_lists_the_catalogue_with_the_default(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "minimill.cli", "models", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    smol = next(line for line in lines if "smollm2-135m" in line)
    gemma = next(line for line in lines if "gemma3-270m" in line)
    assert "yes" in smol and "8192" in smol and "yes" not in gemma and "MiB" in gemma
