"""`serve`'s one-token self-test, in a child process, on the real model and on a broken file."""

from __future__ import annotations

from pathlib import Path

from minimill.engine import selftest
from minimill.models.catalogue import resolve


def test_the_bundled_model_passes(tmp_path: Path) -> None:
    outcome = selftest.run(resolve("smollm2-135m", tmp_path).path)
    assert outcome.ok, outcome.message


def test_a_broken_model_file_fails_with_a_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    outcome = selftest.run(broken)
    assert not outcome.ok and outcome.message
