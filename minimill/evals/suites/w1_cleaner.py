"""The reference cleaner for the W1 data-cleaning task: every rule of data/w1_prefix.txt, field by field.

The prefix is the specification; where it is silent the cleaner takes the reading its examples imply
(an unquoted "$1,234.5" at the end of a row is one value; "Polska" is Poland). The row generator in
`w1_rows` avoids inputs the rules leave ambiguous, so references never depend on such a choice.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from minimill.evals.suites._common import MONTH_ABBR, MONTH_FULL

FIELDS = ("customer_id", "full_name", "email", "phone", "signup_date", "country", "lifetime_value")

_TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof"})
_WORD_PART = re.compile(r"[^\W\d_]+")  # runs of letters, so "o'neil" and "marie-claire" split at ' and -

_COUNTRIES: dict[str, tuple[str, ...]] = {
    "United States": ("us", "usa", "u.s.", "u.s.a.", "america", "etats-unis", "états-unis", "united states",
                      "united states of america"),
    "United Kingdom": ("uk", "gb", "great britain", "england", "scotland", "wales", "united kingdom"),
    "Germany": ("de", "deutschland", "germany"),
    "France": ("fr", "france"),
    "Japan": ("jp", "nippon", "japan"),
    "Brazil": ("br", "brasil", "brazil"),
    "India": ("in", "india"),
    "Spain": ("es", "espana", "españa", "spain"),
    "Italy": ("it", "italia", "italy"),
    "Mexico": ("mx", "mexico", "méxico"),
    "Australia": ("au", "aus", "australia"),
    "Canada": ("ca", "canada"),
    # Not in the rule's list, but its second example maps Polska to Poland.
    "Poland": ("pl", "polska", "poland"),
}
COUNTRY_ALIASES: dict[str, str] = {alias: name for name, aliases in _COUNTRIES.items() for alias in aliases}

MONTHS: dict[str, int] = {**{m.lower(): i for i, m in enumerate(MONTH_FULL, 1)},
                          **{m.lower(): i for i, m in enumerate(MONTH_ABBR, 1)}, "sept": 9}

_YEAR = r"(\d{4}|\d{2})"
_ORD = r"(?:st|nd|rd|th)?"
_SLASH = re.compile(rf"(\d{{1,2}})/(\d{{1,2}})/{_YEAR}")
_DOTTED_DAY_FIRST = re.compile(rf"(\d{{1,2}})[.-](\d{{1,2}})[.-]{_YEAR}")
_YEAR_FIRST = re.compile(r"(\d{4})[./-](\d{1,2})[./-](\d{1,2})")
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DAY_MONTH = re.compile(rf"(\d{{1,2}}){_ORD}\s+(?:of\s+)?([a-z]+)\.?,?\s+{_YEAR}")
_MONTH_DAY = re.compile(rf"([a-z]+)\.?\s+(\d{{1,2}}){_ORD},?\s+{_YEAR}")

_CURRENCY = re.compile(r"usd|eur|gbp|[$€£]", re.IGNORECASE)
_THOUSANDS_COMMA = re.compile(r"\d{1,3}(?:,\d{3})+")
_THOUSANDS_DOT = re.compile(r"\d{1,3}(?:\.\d{3}){2,}")
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def split_row(row: str) -> list[str]:
    """The seven raw fields of a row: CSV-parsed, unquoted, trimmed, missing ones empty."""
    fields = next(csv.reader([row.strip()], skipinitialspace=True), [])
    if len(fields) > len(FIELDS):
        # Only the last field may carry an unquoted comma ("$1,234.5", as in the first example): rejoin it.
        fields = fields[: len(FIELDS) - 1] + [",".join(fields[len(FIELDS) - 1:])]
    fields += [""] * (len(FIELDS) - len(fields))
    return [f.strip().strip('"').strip() for f in fields]


def clean_customer_id(raw: str) -> str:
    """Digits only, leading zeros stripped (all zeros -> "0"); UNKNOWN without digits."""
    digits = re.sub(r"[^0-9]", "", raw)
    return str(int(digits)) if digits else "UNKNOWN"


def _capitalise(word: str) -> str:
    return _WORD_PART.sub(lambda m: m[0][0].upper() + m[0][1:].lower(), word)


def clean_full_name(raw: str) -> str:
    """"Last, First" reordered, titles dropped, each part capitalised, spaces collapsed; UNKNOWN if empty."""
    text = " ".join(raw.split())
    if "," in text:
        last, _, first = text.partition(",")
        text = f"{first} {last}".replace(",", " ")
    words = [w for w in text.split() if w.lower().rstrip(".") not in _TITLES]
    return " ".join(_capitalise(w) for w in words) if words else "UNKNOWN"


def clean_email(raw: str) -> str:
    """Lower-cased, written-out @ and . repaired; INVALID unless one @ with a local part and a dotted domain."""
    text = raw.strip().lower()
    for written, symbol in ((" at ", "@"), ("(at)", "@"), (" dot ", "."), ("(dot)", ".")):
        text = text.replace(written, symbol)
    local, _, domain = text.partition("@")
    valid = text.count("@") == 1 and local and "." in domain and not any(c.isspace() for c in domain)
    return text if valid else "INVALID"


def clean_phone(raw: str, country: str) -> str:
    """Leading + and digits kept; 00 -> +; +1 for 10-digit US/Canada numbers; INVALID under 7 digits."""
    text = raw.strip()
    if not text:
        return ""
    digits = re.sub(r"[^0-9]", "", text)
    if len(digits) < 7:
        return "INVALID"
    if text.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if len(digits) == 10 and country in ("United States", "Canada"):
        return "+1" + digits
    return digits


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:
        return 2000 + year if year <= 29 else 1900 + year
    return year


def _month(name: str) -> int:
    return MONTHS.get(name, 0)  # 0 makes the date impossible, so an unknown month name is INVALID


def _date_parts(text: str, month_first: bool) -> tuple[int, int, int] | None:
    if m := _SLASH.fullmatch(text):
        a, b = int(m[1]), int(m[2])
        return (_year(m[3]), a, b) if month_first else (_year(m[3]), b, a)
    if m := _YEAR_FIRST.fullmatch(text):
        return int(m[1]), int(m[2]), int(m[3])
    if m := _DOTTED_DAY_FIRST.fullmatch(text):
        return _year(m[3]), int(m[2]), int(m[1])
    if m := _COMPACT.fullmatch(text):
        return int(m[1]), int(m[2]), int(m[3])
    if m := _DAY_MONTH.fullmatch(text):
        return _year(m[3]), _month(m[2]), int(m[1])
    if m := _MONTH_DAY.fullmatch(text):
        return _year(m[3]), _month(m[1]), int(m[2])
    return None


def clean_signup_date(raw: str, country: str) -> str:
    """ISO YYYY-MM-DD; slash dates month-first only for the United States; INVALID if unreadable or impossible."""
    parts = _date_parts(" ".join(raw.strip().lower().split()), month_first=country == "United States")
    if parts is None:
        return "INVALID"
    try:
        return dt.date(*parts).isoformat()
    except ValueError:
        return "INVALID"


def clean_country(raw: str) -> str:
    """The English short name for a known code or variant; UNKNOWN otherwise."""
    return COUNTRY_ALIASES.get(" ".join(raw.strip().lower().split()), "UNKNOWN")


def _number(text: str) -> Decimal | None:
    if "," in text and "." in text:
        # Whichever separator comes last is the decimal point: "1.234,5" and "1,234.5" are both 1234.5.
        decimal_sep = "," if text.rfind(",") > text.rfind(".") else "."
        thousands_sep = "." if decimal_sep == "," else ","
        text = text.replace(thousands_sep, "").replace(decimal_sep, ".")
    elif "," in text:
        text = text.replace(",", "") if _THOUSANDS_COMMA.fullmatch(text) else text.replace(",", ".")
    elif _THOUSANDS_DOT.fullmatch(text):
        text = text.replace(".", "")
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def clean_lifetime_value(raw: str) -> str:
    """A plain number with two decimals: currency dropped, European/US separators, k = thousands,
    minus or brackets negative; 0.00 if empty or not a number."""
    text = _CURRENCY.sub("", raw.strip().strip('"')).replace(" ", "")
    negative = False
    if text.startswith("(") and text.endswith(")"):
        negative, text = True, text[1:-1]
    if text.startswith("-"):
        negative, text = True, text[1:]
    scale = Decimal(1)
    if text[-1:] in ("k", "K"):
        scale, text = Decimal(1000), text[:-1]
    number = _number(text)
    if number is None:
        return "0.00"
    value = (number * scale).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if value == 0:
        return "0.00"  # never "-0.00"
    return f"{-value if negative else value:.2f}"


def clean_row(row: str) -> list[str]:
    """The seven cleaned fields of one raw W1 row."""
    cid, name, email, phone, date, country_raw, value = split_row(row)
    country = clean_country(country_raw)
    return [clean_customer_id(cid), clean_full_name(name), clean_email(email), clean_phone(phone, country),
            clean_signup_date(date, country), country, clean_lifetime_value(value)]
