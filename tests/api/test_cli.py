"""The real `minimill serve` and `minimill models` commands, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from minimill.config import Config
from minimill.router.policy import shipped_default
from tests.api.conftest import cli_server


def test_serve_prints_where_what_and_capacity_then_answers(tmp_path: Path) -> None:
    with cli_server(tmp_path, "--kv-size", "1024", "--threads", "1", env={"MINIMILL_MAX_SEQS": "4"}) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        reply = client.completions.create(model="smollm2-135m", prompt="Hello", max_tokens=3, temperature=0)
        assert reply.usage is not None and reply.usage.completion_tokens == 3
        health = httpx.get(f"{server.url}/health").json()
        assert health["models"]["smollm2-135m"]["kv_total"] == 1024
    (output,) = server.output
    assert f"{server.url}/v1" in output
    assert "smollm2-135m" in output and "KV capacity 1024 tokens" in output and "4 sequences" in output


def test_models_lists_the_catalogue_with_the_default(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "minimill.cli", "models", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {name: next(line for line in lines if f" {name} " in line)
            for name in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")}
    assert "8192" in rows["smollm2-135m"] and "32768" in rows["qwen2.5-coder-1.5b"]
    assert "469 MiB" in rows["qwen2.5-coder-0.5b"] and "494M" in rows["qwen2.5-coder-0.5b"]
    assert "Apache-2.0" in rows["qwen2.5-coder-1.5b"] and "Gemma Terms of Use" in rows["gemma3-270m"]
    defaults = [name for name, line in rows.items() if "│ yes" in line]
    expected = shipped_default(tmp_path, Config().models)
    assert defaults == [expected.model] and expected.model.startswith("qwen2.5-coder")
    assert f"default (when serving qwen2.5-coder-0.5b, qwen2.5-coder-1.5b): {expected.model}" in result.stdout
