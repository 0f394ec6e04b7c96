"""The budget pages and the budget report API, for a signed-in member of the buyer: the list,
a budget's execution with its charts' data, drill-downs, exports, alerts; nothing of another
organization's."""

from __future__ import annotations

import io
import json
import re

import pytest
from openpyxl import load_workbook

from billing.models import BudgetAlert
from tests.billing.budgets.test_budget_reports import build_budget
from tests.factories import make_org


@pytest.fixture()
def planned(session, org):
    planned = build_budget(session, org)
    line = planned["lines"]["L01"]
    session.add(BudgetAlert(line_id=line.id, organization_id=org.id, threshold=50,
                            used_minor=50_000_000, approved_minor=100_000_000, detail={}))
    session.commit()
    return planned


@pytest.fixture()
def member(sign_in_as, org):
    return sign_in_as(org, "member")


def test_the_list_shows_the_organizations_budgets(member, planned):
    page = member.get("/budgets")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "FY2026 data budget" in text and f"/budgets/{planned['budget'].id}" in text
    assert "CNY 1,035,000.00" in text and "2.51 %" in text
    assert 'href="/budgets"' in text  # the navigation link


def test_a_budget_page_shows_lines_dimensions_charts_and_alerts(member, planned):
    budget = planned["budget"]
    page = member.get(f"/budgets/{budget.id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    line = planned["lines"]["L01"]
    assert "Medical imaging data" in text and "CNY 962,654.33" in text and "2.50 %" in text
    assert f"/budgets/{budget.id}/records?line={line.id}" in text
    supplier = planned["suppliers"][0]
    assert f"/budgets/{budget.id}/records?supplier={supplier.id}" in text
    assert f"/budgets/{budget.id}/records?sector=healthcare" in text
    assert f"/budgets/{budget.id}/records?month=2026-04" in text
    assert "CT scans" in text and "Healthcare" in text
    assert "of which CNY 50.00 by API calls not yet posted" in text
    assert f"/api/v1/budgets/{budget.id}/report.xlsx" in text
    assert "50 %" in text  # the alert
    # Charts from embedded JSON and scripts served by us: no inline code under the CSP.
    for script in re.findall(r"<script([^>]*)>(.*?)</script>", text, re.S):
        assert "src=" in script[0] or 'type="application/json"' in script[0]
    data = json.loads(re.search(r'id="budget-data">(.*?)</script>', text, re.S).group(1))
    assert data["lines"]["codes"] == ["L01", "L02", "L03"]
    assert data["lines"]["approved"][0] == "1000000.00" and data["lines"]["spent"][0] == "25000.00"
    assert len(data["months"]["labels"]) == 12


def test_the_chinese_page_names_sectors_and_datasets_in_chinese(member, planned):
    page = member.get(f"/budgets/{planned['budget'].id}",
                      headers={"Accept-Language": "zh-CN"})
    text = page.get_data(as_text=True)
    assert "医疗健康" in text and "CT影像" in text


def test_a_drill_down_page_lists_the_records_behind_a_figure(member, planned):
    budget, line = planned["budget"], planned["lines"]["L01"]
    supplier = planned["suppliers"][1]
    page = member.get(f"/budgets/{budget.id}/records?line={line.id}&supplier={supplier.id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "L01 Medical imaging data" in text and "Supplier B" in text
    assert "3 records: committed CNY 12,345.67, spent CNY 0.00." in text
    assert member.get(f"/budgets/{budget.id}/records?supplier=abc").status_code == 422


def test_another_organizations_budget_is_not_found(sign_in_as, session, planned):
    stranger = sign_in_as(make_org(session, "buyer", name="Stranger"), "owner")
    budget = planned["budget"]
    for path in (f"/budgets/{budget.id}", f"/budgets/{budget.id}/records",
                 f"/api/v1/budgets/{budget.id}/report", f"/api/v1/budgets/{budget.id}/report.xlsx"):
        response = stranger.get(path)
        assert response.status_code == 404, path
        assert "Medical imaging" not in response.get_data(as_text=True)
    assert "FY2026 data budget" not in stranger.get("/budgets").get_data(as_text=True)


def test_the_api_report_and_drill_down(member, planned):
    budget = planned["budget"]
    report = member.get(f"/api/v1/budgets/{budget.id}/report?by=supplier").get_json()
    assert report["by"] == "supplier" and report["totals"]["spent"] == "26003.34"
    first = report["rows"][0]
    records = member.get(f"/api/v1/budgets/{budget.id}/report/records?supplier={first['key']}"
                         ).get_json()
    assert records["spent"] == first["spent"] and records["total"] == first["records"]
    assert len(records["items"]) == records["total"] and records["next_cursor"] is None
    one = member.get(f"/api/v1/budgets/{budget.id}/report/records?supplier={first['key']}"
                     "&limit=1").get_json()
    rest = member.get(f"/api/v1/budgets/{budget.id}/report/records?supplier={first['key']}"
                      f"&cursor={one['next_cursor']}").get_json()
    assert [r["id"] for r in one["items"] + rest["items"]] == [
        r["id"] for r in records["items"]]
    assert rest["total"] == one["total"] == records["total"]
    bad = member.get(f"/api/v1/budgets/{budget.id}/report?by=colour")
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert member.get(f"/api/v1/budgets/{budget.id}/report/records?month=2026-13"
                      ).status_code == 422


def test_the_exports_download(member, planned, org):
    budget = planned["budget"]
    report = member.get(f"/api/v1/budgets/{budget.id}/report").get_json()
    xlsx = member.get(f"/api/v1/budgets/{budget.id}/report.xlsx")
    assert xlsx.status_code == 200 and "attachment" in xlsx.headers["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(xlsx.data)).active
    totals = [row for row in sheet.iter_rows(values_only=True) if row[0] == "合计 / Total"][0]
    assert f"{totals[6]:.2f}" == report["totals"]["spent"]
    csv_response = member.get(f"/api/v1/budgets/{budget.id}/report.csv")
    assert csv_response.mimetype == "text/csv"
    text = csv_response.get_data(as_text=True)
    assert org.name in text and "L01,Medical imaging data" in text


def test_a_budget_named_with_a_control_character_exports_both_files(member, planned, session):
    planned["budget"].name = "ctl\u0001name"
    planned["lines"]["L01"].name = "=HYPERLINK(\"http://evil.example\")"
    session.commit()
    budget = planned["budget"]
    xlsx = member.get(f"/api/v1/budgets/{budget.id}/report.xlsx")
    assert xlsx.status_code == 200, xlsx.get_data(as_text=True)
    sheet = load_workbook(io.BytesIO(xlsx.data)).active
    assert sheet["B1"].value == "ctl\ufffdname" and sheet["B1"].data_type == "s"
    texts = [c.value for row in sheet.iter_rows() for c in row if isinstance(c.value, str)]
    assert "'=HYPERLINK(\"http://evil.example\")" in texts
    exported = member.get(f"/api/v1/budgets/{budget.id}/report.csv")
    assert exported.status_code == 200
    text = exported.get_data(as_text=True)
    assert "ctl\ufffdname" in text and "\u0001" not in text
    assert "L01,\"'=HYPERLINK(\"\"http://evil.example\"\")\"" in text
