"""The console's pure parts, without a server: dollars as the pages write them and the request log's query."""

from __future__ import annotations

from decimal import Decimal

import pytest

from minimill.errors import InvalidRequest
from minimill.web.views import RequestQuery, usd


@pytest.mark.parametrize(("value", "written"), [
    (None, "—"), (0, "$0"), (Decimal("0.000200000"), "$0.0002"), (Decimal("0.0000027349172"), "$0.00000273492"),
    (Decimal("-0.0000052804"), "-$0.0000052804"), (Decimal("1234.5"), "$1,234.5000"), (Decimal("-2"), "-$2.0000"),
])
def test_dollars(value: Decimal | None, written: str) -> None:
    assert usd(value) == written


def parse(**given: str) -> RequestQuery:
    fields = {"model": None, "kind": None, "since": None, "until": None, "offset": None, "limit": None}
    return RequestQuery.parse(**{**fields, **given})  # type: ignore[arg-type]


def test_the_request_query_from_a_query_string() -> None:
    query = parse(model="m", since="2026-01-01", until="9999-12-31", offset="50", limit="25")
    chosen = query.filter()
    assert (chosen.since, chosen.until) == (1767225600.0, 253402300800.0)  # the last day ends at year 10000
    assert query.link(25) == "/console/requests?model=m&since=2026-01-01&until=9999-12-31&limit=25&offset=25"
    assert parse().offset == 0 and parse().limit == 25 and not parse().filtered and query.filtered


@pytest.mark.parametrize(("field", "text"), [
    ("offset", "-1"), ("offset", "1.5"), ("offset", "9223372036854775808"), ("offset", "9" * 5000),
    ("limit", "0"), ("limit", "201"), ("since", "2026-02-30"), ("until", "tomorrow"),
])
def test_a_bad_query_is_refused_by_name(field: str, text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse(**{field: text})
    assert refused.value.param == field and repr(text[:40]) in refused.value.message
