"""Cells that a spreadsheet shows as they were written, for every export the marketplace hands
out (statements, reconciliations, budget reports) in CSV and XLSX alike.

- **Text is inert.** Every ``str`` — an organization's name, a budget's, a line's description,
  a bank reference, our own labels — has its control characters (C0 but tab and line feed,
  DEL, C1) and what XML cannot hold (lone surrogates, U+FFFE, U+FFFF) replaced by U+FFFD, so
  any text can be written to XLSX (which would also read a carriage return as a line feed). A
  text that would start a formula (``=``, ``+``, ``-``, ``@``, tab;
  OWASP's CSV injection) gets a leading apostrophe, so ``=HYPERLINK(...)`` is shown as the text
  it is; in XLSX it is also a string cell, never a formula.
- **Numbers stay numbers.** An ``int`` is written as it is; a ``Decimal`` (an amount, a rate)
  as its exact digits: the decimal string in CSV, and in XLSX a numeric cell holding those
  digits (openpyxl would write a number through a float's ``"%.16g"``, 96.90 becoming
  96.90000000000001). A negative amount is a negative number, never a text with an apostrophe.
- ``None`` is an empty cell.

Whether a value is text or a number is its Python type, never its look: an export passes
amounts as ``Decimal`` and everything a person typed as ``str``.
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from typing import Any, Iterable, Sequence

from openpyxl.cell.cell import TYPE_NUMERIC, TYPE_STRING

_UNWRITABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
FORMULA_START = ("=", "+", "-", "@", "\t")


def printable(value: str) -> str:
    """``value`` with every character a file cannot carry as text replaced by U+FFFD."""
    return _UNWRITABLE.sub("\ufffd", value)


def safe_text(value: str) -> str:
    """``value`` printable, with an apostrophe before a leading formula character."""
    value = printable(value)
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def csv_file(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows as CSV: UTF-8 with a byte-order mark (so spreadsheet programs read the Chinese),
    CRLF line ends, every cell through ``csv_cell``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return out.getvalue().encode("utf-8-sig")


def append_row(sheet, values: Sequence[Any]) -> int:
    """Append ``values`` to an openpyxl worksheet as one row (text inert in string cells,
    ``Decimal`` exact in numeric cells); the row's number, for its styles and formats."""
    sheet.append([_xlsx_value(value) for value in values])
    row = sheet.max_row
    for column, value in enumerate(values, start=1):
        if isinstance(value, str):
            sheet.cell(row=row, column=column).data_type = TYPE_STRING
        elif isinstance(value, Decimal):
            sheet.cell(row=row, column=column).data_type = TYPE_NUMERIC
    return row


def _xlsx_value(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not an amount")
        return format(value, "f")  # typed numeric by ``append_row``
    return value
