"""Files shared by replicas: with a database server as the ledger, a file's content lives in it, so a replica on
another host (another directory) reads what one replica stored; deleted, it is gone for both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minimill.batch.files import CHUNK_BYTES, FileStore
from minimill.billing.ledger import Ledger
from minimill.errors import NotFound


def test_a_file_stored_by_one_replica_is_read_by_another(tmp_path: Path, postgres_url: str) -> None:
    first_ledger, second_ledger = Ledger(postgres_url), Ledger(postgres_url)
    first = FileStore(first_ledger, tmp_path / "host-a", max_bytes=64 << 20)
    second = FileStore(second_ledger, tmp_path / "host-b", max_bytes=64 << 20)
    assert first.in_database and second.in_database
    data = os.urandom(2 * CHUNK_BYTES + 12345)  # three chunks
    record = first.upload("tenant-files", "batch", "rows.jsonl", data)
    assert second.content("tenant-files", record.id) == data
    assert not any((tmp_path / "host-a").iterdir())  # nothing on the first host's disk
    with pytest.raises(NotFound):
        second.content("someone-else", record.id)
    replaced = second.put("tenant-files", "batch_output", "out.jsonl", b"new", file_id=record.id)
    assert first.content("tenant-files", replaced.id) == b"new"
    second.delete("tenant-files", record.id)
    with pytest.raises(NotFound):
        first.content("tenant-files", record.id)
    first_ledger.close()
    second_ledger.close()


def test_with_sqlite_contents_stay_on_disk(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    store = FileStore(ledger, tmp_path / "files", max_bytes=1 << 20)
    record = store.upload("t", "batch", "x.jsonl", b"{}\n")
    assert not store.in_database and (tmp_path / "files" / record.id).read_bytes() == b"{}\n"
    assert store.content("t", record.id) == b"{}\n"
    ledger.close()
