"""What any value from outside must be before a service or the database sees it.

The database and the code below it hold values in fixed ranges: ids and counts in 32-bit
integer columns (64-bit for token and money totals), text that PostgreSQL can store (no NUL
character) and that encodes as UTF-8 (no lone surrogate, which a JSON ``"\\ud800"`` escape
produces), JSON nested no deeper than a setting, and dates of the calendar the marketplace
runs in. A value outside them would fail deep inside (a 500, or text stored on one database
and refused by the other); here it is refused first, as a 422 naming its field.

These checks are pure. ``market.web.boundary`` applies them to every request of the web layer (the
API's paths, queries and bodies, and the storefront's forms), and the importer applies them to
every imported record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from market.core.errors import InvalidInput

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The dates the marketplace deals in: periods, usage, budgets and fiscal years.
FIRST_YEAR, LAST_YEAR = 1970, 2199
FIRST_DATE, LAST_DATE = dt.date(FIRST_YEAR, 1, 1), dt.date(LAST_YEAR, 12, 31)
FIRST_MOMENT = dt.datetime(FIRST_YEAR, 1, 1, tzinfo=dt.timezone.utc)
LAST_MOMENT = dt.datetime(LAST_YEAR, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
# An amount of money in major units: a 64-bit count of minor units with room for six places.
MAX_AMOUNT = 10**12
# Text the API takes without a length of its own.
MAX_TEXT = 1000
JSON_MAX_DEPTH = 64


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "Text may not contain the NUL character (U+0000)."
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Text may not contain a lone surrogate (U+D800 to U+DFFF): it is not UTF-8."
    return None


def check_text(value: str, field: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(problem, field=field)
    return value


@dataclass(frozen=True)
class JsonProblem:
    path: str  # the member at fault, e.g. ``events.3.model``; empty for the value itself
    message: str
    too_deep: bool


def json_problem(value: Any, max_depth: int = JSON_MAX_DEPTH,
                 text_judged_by: str | None = None) -> JsonProblem | None:
    """The first place in a parsed JSON value that cannot be taken: arrays
    and objects nested more than ``max_depth`` levels (the value itself is level 1), or a key or
    string that ``text_problem`` refuses — except under the top-level member
    ``text_judged_by``, whose items a schema judges one by one (a batch whose each item gets its
    own outcome). The walks are iterative, so no nesting exhausts the stack."""
    if _takes(value, max_depth, text_judged_by):
        return None  # most bodies: no path was built
    stack: list[tuple[Any, tuple, int]] = [(value, (), 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if text_judged_by is not None and path[:1] == (text_judged_by,):
                continue
            problem = text_problem(item)
            if problem is not None:
                return JsonProblem(_path(path), problem, False)
            continue
        if isinstance(item, dict):
            children = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            continue
        if depth > max_depth:
            return JsonProblem(_path(path), f"Arrays and objects may nest at most {max_depth} "
                                            "levels deep.", True)
        for key, child in children:
            if isinstance(key, str) and not (
                    text_judged_by is not None and path[:1] == (text_judged_by,)):
                problem = text_problem(key)
                if problem is not None:
                    return JsonProblem(_path(path + (key,)), problem, False)
            stack.append((child, path + (key,), depth + 1))
    return None


def _takes(value: Any, max_depth: int, text_judged_by: str | None) -> bool:
    """Whether ``json_problem`` finds nothing, by a walk that keeps no paths (a usage batch's
    thousand events are walked on every report)."""
    stack: list[tuple[Any, int, bool]] = [(value, 1, False)]
    while stack:
        item, depth, judged = stack.pop()
        if isinstance(item, str):
            if not judged and text_problem(item) is not None:
                return False
            continue
        if isinstance(item, dict):
            if depth > max_depth:
                return False
            for key, child in item.items():
                if not judged and isinstance(key, str) and text_problem(key) is not None:
                    return False
                stack.append((child, depth + 1, judged or (depth == 1 and key == text_judged_by)))
        elif isinstance(item, list):
            if depth > max_depth:
                return False
            stack.extend((child, depth + 1, judged) for child in item)
    return True


def check_json(value: Any, field: str, max_depth: int = JSON_MAX_DEPTH,
               text_judged_by: str | None = None) -> Any:
    """``value`` unchanged, or a 422 naming ``field`` and the place inside it at fault."""
    found = json_problem(value, max_depth, text_judged_by)
    if found is not None:
        where = found.path
        name = f"{field}.{where}" if field and where else field or where or "_body"
        raise InvalidInput(found.message, field=name)
    return value


def _path(parts: tuple) -> str:
    return ".".join(str(part) for part in parts)
