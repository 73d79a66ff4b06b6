"""A seeded generator of messy W1 rows, in the style of the shared workload's w1_rows.txt.

Each row is rendered from a clean record, so the generator knows the right answer independently of
the reference cleaner; tests check that the two agree. Inputs whose cleaning the rules leave open
(accented emails, empty dates, "1.234" style values, 10-digit numbers starting with 00) are never made.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from minimill.evals.suites._common import MONTH_ABBR, MONTH_FULL, ordinal, strip_accents

FIRST_NAMES = ("John", "Anna", "Li", "Tom", "Aiko", "José", "Marie-Claire", "Raj", "Fatima", "Ingrid", "Ken", "Olga",
               "Zoë", "Pedro", "Wei", "O'Neil")
LAST_NAMES = ("Smith", "Patel", "Jones", "Ivanova", "Müller", "Dupont", "Kowalska", "Tanaka", "Silva", "Berg", "Khan",
              "García", "Murphy", "Wei", "O'Neil", "Lopez")
DOMAINS = ("example.com", "mail.pl", "web.de", "yahoo.fr", "corp.co.uk", "post.jp")
TITLES = ("Mr", "Mrs", "Ms", "Dr", "Prof", "mr.", "dr.", "prof", "DR.")
COUNTRY_VARIANTS: dict[str, tuple[str, ...]] = {
    "United States": ("US", "usa", "USA", "U.S.", "America", "Etats-Unis", "United States", "us"),
    "Canada": ("CA", "ca", "Canada"),
    "United Kingdom": ("UK", "uk", "GB", "Great Britain", "England", "Scotland", "Wales"),
    "Germany": ("DE", "Deutschland", "germany"),
    "France": ("FR", "fr", "France"),
    "Japan": ("JP", "Nippon", "japan"),
    "Brazil": ("BR", "brasil", "Brasil"),
    "India": ("IN", "india"),
    "Spain": ("ES", "Espana", "España", "spain"),
    "Italy": ("IT", "it", "Italia"),
    "Mexico": ("MX", "mexico"),
    "Australia": ("AU", "Aus", "australia"),
    "Poland": ("Polska", "PL"),
}
UNKNOWN_COUNTRIES = ("", "n/a", "??", "-")


def _mixed_case(rng: random.Random, word: str) -> str:
    return rng.choice((word.lower(), word.upper(), word, word.swapcase()))


def _customer_id(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(("n/a", "", "ID-", "none")), "UNKNOWN"
    if kind == 1:
        return rng.choice(("#000", "ID0000", "0")), "0"
    n = rng.randint(1, 99999)
    text = rng.choice((f"ID{n}", f"ID{n:06d}", f"#{n}", f"cust-{n}", f"C{n}", str(n), f"cust-{n:07d}"))
    return text, str(n)


def _full_name(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.12:
        return rng.choice(("", "  ")), "UNKNOWN"
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    f, l_ = _mixed_case(rng, first), _mixed_case(rng, last)
    title = rng.choice(TITLES) + " " if rng.random() < 0.25 else ""
    gap = " " * rng.randint(1, 3)
    if rng.random() < 0.3:
        text = f'"{l_}, {title}{f}"'
    else:
        text = f"{rng.choice(('', '  '))}{title}{f}{gap}{l_}{rng.choice(('', ' '))}"
    return text, f"{first} {last}"


def _ascii_local(first: str, last: str) -> str:
    # ASCII only: the rules do not say whether an email's accents survive, so none are generated.
    def plain(s: str) -> str:
        return strip_accents(s).lower().replace("'", "")

    return f"{plain(first)}.{plain(last)}"


def _email(rng: random.Random, expected_name: str) -> tuple[str, str]:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(("not-an-email", "", "john.smith@", "@example.com", "anna@localhost", "a@@b.com")), "INVALID"
    if expected_name == "UNKNOWN":
        parts = [rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)]
    else:
        parts = expected_name.split(" ")
    local, domain = _ascii_local(parts[0], parts[-1]), rng.choice(DOMAINS)
    expected = f"{local}@{domain}"
    if kind in (1, 2):
        text = f"{local}(at){domain.replace('.', '(dot)')}" if kind == 1 else f"{local}(at){domain}"
        text = text.title() if rng.random() < 0.3 else text
    elif kind == 3:
        text = f"{local} at {domain.replace('.', ' dot ')}".upper().replace(" AT ", " at ").replace(" DOT ", " dot ")
    elif kind == 4:
        text = f"{local.upper()}@{domain.upper()}"
    else:
        text = expected
    return rng.choice(("", " ", "  ")) + text + rng.choice(("", " ")), expected


def _phone(rng: random.Random, country: str) -> tuple[str, str]:
    kind = rng.randrange(7)
    if kind == 0:
        return "", ""
    if kind == 1:
        return rng.choice(("12", "555-12", "n/a", "123 45")), "INVALID"
    if kind in (2, 3):
        area, mid, end = rng.randint(200, 999), rng.randint(0, 999), rng.randint(0, 9999)
        digits = f"{area}{mid:03d}{end:04d}"
        text = rng.choice((f"({area}) {mid:03d}-{end:04d}", f"{area}.{mid:03d}.{end:04d}",
                           f"{area}-{mid:03d}-{end:04d}", f"{area}/{mid:03d} {end:04d}"))
        return text, ("+1" + digits if country in ("United States", "Canada") else digits)
    if kind == 4:
        cc, a, b = rng.choice(("49", "48", "33", "81")), rng.randint(10, 999), rng.randint(100000, 9999999)
        return f"00{cc} {a} {b}", f"+{cc}{a}{b}"
    if kind == 5:
        a, b = rng.randint(1000, 9999), rng.randint(100000, 999999)
        return f"+44.{a}.{b}", f"+44{a}{b}"
    a, b, c = rng.randint(200, 999), rng.randint(100, 999), rng.randint(1000, 9999)
    return f"+1 {a}-{b}-{c}", f"+1{a}{b}{c}"


def _date(rng: random.Random, country: str) -> tuple[str, str]:
    if rng.random() < 0.1:
        return rng.choice(("31/02/2020", "30/02/2021", "2021.13.05", "someday", "02/30/2019", "31 Apr 2020")), "INVALID"
    day = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(80 * 365))
    y, m, d, yy = day.year, day.month, day.day, f"{day.year % 100:02d}"
    kind = rng.randrange(8)
    if kind in (0, 1):
        year = yy if kind == 1 else str(y)
        text = f"{m:02d}/{d:02d}/{year}" if country == "United States" else f"{d:02d}/{m:02d}/{year}"
    elif kind == 2:
        text = f"{y}.{m:02d}.{d:02d}"
    elif kind == 3:
        text = f"{d} {MONTH_ABBR[m - 1]} {yy}"
    elif kind == 4:
        text = f"{d} {MONTH_ABBR[m - 1]} {y}"
    elif kind == 5:
        text = f"{MONTH_FULL[m - 1]} {ordinal(d)} {y}"
    elif kind == 6:
        text = f"{y}{m:02d}{d:02d}"
    else:
        text = day.isoformat()
    return text, day.isoformat()


def _country(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.08:
        return rng.choice(UNKNOWN_COUNTRIES), "UNKNOWN"
    name = rng.choice(tuple(COUNTRY_VARIANTS))
    return rng.choice(COUNTRY_VARIANTS[name]), name


def _value(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(("abc", "", "n/a", "-")), "0.00"
    if kind == 1:
        tenths = rng.randint(1, 99)
        k = f"{tenths // 10}" if tenths % 10 == 0 else f"{tenths / 10:.1f}"
        return f"{k}{rng.choice('kK')}", f"{Decimal(tenths) * 100:.2f}"
    cents = rng.randint(1, 999999)
    value = Decimal(cents) / 100
    expected = f"{value:.2f}"
    us = f"{value:,.2f}"
    if kind == 2:
        return f"({value.to_integral_value()})" if cents % 100 == 0 else f"({value:.2f})", f"-{expected}"
    if kind == 3:
        return f"-{value:.2f} EUR", f"-{expected}"
    if kind == 4:
        return f"${us[:-1] if us.endswith('0') else us}", expected  # unquoted comma: the last field spills
    if kind == 5:
        return f'"{us}"', expected
    if kind == 6:
        euro = us.replace(",", "_").replace(".", ",").replace("_", ".")
        return f'"{euro} {rng.choice(("€", "EUR"))}"', expected
    if kind == 7:
        return f"{rng.choice(('£', 'GBP ', 'USD '))}{value:.2f}", expected
    return f"{value:.2f} {rng.choice(('EUR', 'USD', 'GBP'))}", expected


def messy_row(rng: random.Random) -> tuple[str, list[str]]:
    """One messy raw row and the seven cleaned fields it should become."""
    country_text, country = _country(rng)
    fields = [_customer_id(rng), _full_name(rng)]
    fields.append(_email(rng, fields[1][1]))
    fields += [_phone(rng, country), _date(rng, country), (country_text, country), _value(rng)]
    sep = rng.choice((", ", ",", " , "))
    return sep.join(text for text, _ in fields), [expected for _, expected in fields]
