"""The ledger fixture both billing test modules use: SQLite in a temporary file, and the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from minimill.billing.ledger import Ledger

DAY1 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DAY2 = DAY1 + 86_400


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """An empty ledger on each database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = Ledger(url)
    with opened.engine.begin() as conn:  # the PostgreSQL database is shared by the session: start empty
        conn.exec_driver_sql("DELETE FROM ledger")
        conn.exec_driver_sql("DELETE FROM caches")
    yield opened
    opened.close()
