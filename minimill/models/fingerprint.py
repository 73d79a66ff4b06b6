"""A model file's SHA-256, remembered in the data directory so a restart does not re-read the file."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path, memo_dir: Path) -> str:
    """SHA-256 of `path`; cached under `memo_dir`, keyed by path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = memo_dir / f"{key}.sha256"
    if memo.is_file():
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    memo_dir.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest)
    return digest


def system_fingerprint(model_digest: str, engine_build: str) -> str:
    """OpenAI's `system_fingerprint`: changes whenever the model file or the engine build does (so a
    client knows when the same seed may give other output)."""
    return "fp_" + hashlib.sha256(f"{model_digest}\0{engine_build}".encode()).hexdigest()[:12]
