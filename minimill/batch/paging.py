"""Cursor pages of listed records, as OpenAI's list endpoints page them (`after` = the previous page's last id)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class HasId(Protocol):
    """A listed record."""

    @property
    def id(self) -> str:
        """Its id, the cursor."""


R = TypeVar("R", bound=HasId)


def after_cursor(records: Sequence[R], after: str | None, limit: int) -> list[R]:
    """Up to `limit` records that follow the one with id `after` (from the start without it; none if it is
    not there)."""
    if after is not None:
        ids = [r.id for r in records]
        records = records[ids.index(after) + 1:] if after in ids else []
    return list(records[:limit])
