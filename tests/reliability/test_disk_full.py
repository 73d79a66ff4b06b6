"""A full disk: the disk tier turns itself off and requests go on, an upload gets 507, and a ledger that
cannot write makes the request a 503 (never a 500, never an unbilled answer)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, serve

MODEL = "smollm2-135m"
PREFIX = [{"role": "system", "content": "You answer in one short sentence, politely and precisely. " * 10}]


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB filesystem of the test's own."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave: int) -> None:
    """Fill the filesystem of `path` until `leave` bytes are free."""
    import os

    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with open(path / "filler", "ab") as out:
        out.write(b"\0" * max(0, free - leave))


def chat(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [*PREFIX, {"role": "user", "content": "Hi."}], "max_tokens": 4,
            "temperature": 0, **extra}


def test_the_disk_tier_turns_off_and_uploads_are_507(small_disk: Path, tmp_path: Path) -> None:
    data = small_disk / "data"
    data.mkdir()
    gen = serve(data, kv_size=1024, max_seqs=4, ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    server: Server = next(gen)
    try:
        fill(small_disk, leave=64 * 1024)  # room for the fingerprints, not for a KV file
        with httpx.Client(base_url=server.url, timeout=120) as http:
            cache = http.post("/v1/caches", json={"model": MODEL, "messages": PREFIX, "ttl_seconds": 600})
            assert cache.status_code == 200, cache.text
            reply = http.post("/v1/chat/completions", json=chat(cache_id=cache.json()["id"]))
            assert reply.status_code == 200, reply.text
            assert reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == cache.json()["tokens"]
            assert server.metric("minimill_kv_disk_tier_enabled") == 0
            assert server.metric("minimill_kv_tier_write_errors_total") >= 1
            upload = http.post("/v1/files", data={"purpose": "batch"},
                               files={"file": ("rows.jsonl", b'{"a": 1}\n' * 20_000)})
            assert upload.status_code == 507, upload.text
            assert upload.json()["error"]["code"] == "insufficient_storage"
            assert not [p for p in (data / "files").iterdir()]  # nothing half-written kept
            assert http.get("/health").status_code == 200
    finally:
        next(gen, None)


def test_a_ledger_that_cannot_write_is_a_503_not_an_unbilled_answer(small_disk: Path) -> None:
    data = small_disk / "data"
    data.mkdir()
    gen = serve(data, kv_size=1024, max_seqs=4)
    server: Server = next(gen)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            assert http.post("/v1/chat/completions", json=chat()).status_code == 200
            fill(small_disk, leave=0)
            for _ in range(3):  # SQLite may still find a free page or two: keep writing until it cannot
                reply = http.post("/v1/chat/completions", json=chat(max_tokens=8))
                if reply.status_code != 200:
                    break
            assert reply.status_code == 503, reply.text
            assert "ledger" in reply.json()["error"]["message"]
            (small_disk / "filler").unlink()
            assert http.post("/v1/chat/completions", json=chat()).status_code == 200
    finally:
        next(gen, None)
