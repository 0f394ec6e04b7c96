"""The authorization matrix: every /api/v1 endpoint, called anonymously and by every role of a
foreign organization (people of each member role, a key with every scope, a key with one).

Another organization's objects answer 404; a missing role or scope answers 403; nobody gets 401.
The matrix must name every declared operation, so a new endpoint cannot go untested.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass

import pytest

from market.accounts import services as accounts
from market.accounts.authz import ANY_KEY, PERMISSIONS, SCOPES, Principal
from market.accounts.models import OrgRole
from market.web.api import api
from market.catalog import files, importer, listings, offers
from market.catalog.models import Upload
from market.core.objects import object_key
from market.catalog import services as catalog
from billing import deals, invoices, orders
from billing.context import BillingSettings
from billing.models.statements import SettlementStatement, StatementAdjustment
from billing.models import BankReceipt, Budget, BudgetLine, Payment, Refund, Subscription
from pricing.money import Money, UnitPrice
from pricing.rating import LineItem
from tests.factories import make_key, make_org, make_user
from tests.fixtures import csrf_token


@dataclass(frozen=True)
class Case:
    # public | object | collection | create | disabled (a card endpoint: 409 while no card
    # processor is configured, as in the embedded default the suite runs) | platform (the
    # platform's staff only: 403 even for an exchange holding the permission) | invitee (for
    # one person only: 403 for everyone else, nothing joined) | unknown (public, but what it
    # names is a secret the caller does not hold: 404 for everyone)
    kind: str
    body: dict | None = None
    upload: bytes | None = None  # a raw body instead of JSON
    upload_type: str = "application/x-ndjson"
    query: dict | None = None


VICTIM_DATASET = {
    "title_zh": "受害者数据", "title_en": "Victim dataset", "sector": "healthcare",
    "modality": "text", "ai_stage": "pretraining", "licence": "research_only",
    "personal_information": "none", "rights": {"holding": "Victim", "usage": "Victim",
                                               "operation": "Victim"}}
SHARES = {"participants": [{"organization_id": "{victim_org}", "role": "supplier",
                            "share_bps": 10_000}]}


# (method, rule) -> how a foreign caller must be answered. Rules use the victim's ids.
MATRIX: dict[tuple[str, str], Case] = {
    ("GET", "/health"): Case("public"),
    ("POST", "/accounts"): Case("public", {
        "name": "New Person", "email": "new.person@example.com",
        "password": "violet-harbor-engine", "organization_name": "New Org", "roles": ["buyer"]}),
    # A registration link nobody mailed to the caller: unknown to everyone alike.
    ("POST", "/accounts/confirm"): Case("unknown", {"token": "never-mailed-to-anyone"}),
    ("GET", "/openapi.json"): Case("public"),
    ("GET", "/docs"): Case("public"),
    ("GET", "/me"): Case("collection"),
    ("GET", "/organizations/<int:organization_id>"): Case("object"),
    ("GET", "/organizations/<int:organization_id>/members"): Case("object"),
    ("POST", "/organizations/<int:organization_id>/invitations"): Case(
        "object", {"email": "{victim_email}", "role": "member"}),
    ("GET", "/organizations/<int:organization_id>/invitations"): Case("object"),
    ("POST", "/invitations/<int:invitation_id>/revoke"): Case("object"),
    # The victim's real invitation link, leaked: only the invited e-mail may accept it.
    ("POST", "/invitations/accept"): Case("invitee", {"token": "{victim_invitation}"}),
    ("GET", "/keys"): Case("collection"),
    ("POST", "/keys"): Case("create", {"name": "mine", "scopes": ["catalog:read"],
                                  "expires_at": "2099-01-01T00:00:00Z"}),
    ("GET", "/keys/<int:key_id>"): Case("object"),
    ("PATCH", "/keys/<int:key_id>"): Case("object", {"monthly_token_cap": 1}),
    ("POST", "/keys/<int:key_id>/revoke"): Case("object"),
    ("GET", "/audit-log"): Case("collection"),
    ("GET", "/catalog/taxonomy"): Case("public"),
    ("GET", "/datasets"): Case("collection"),
    ("POST", "/datasets"): Case("create", VICTIM_DATASET | {
        "title_en": "Mine", "title_zh": "我的", "rights": {}}),
    ("GET", "/supplier/datasets"): Case("collection"),
    ("GET", "/datasets/<int:dataset_id>"): Case("object"),
    ("PATCH", "/datasets/<int:dataset_id>"): Case("object", {"title_en": "Hijacked"}),
    ("POST", "/datasets/<int:dataset_id>/versions"): Case("object", upload=b'{"a": 1}\n'),
    ("GET", "/datasets/<int:dataset_id>/versions"): Case("object"),
    ("GET", "/datasets/<int:dataset_id>/versions/<int:number>"): Case("object"),
    ("GET", "/datasets/<int:dataset_id>/versions/<int:number>/export"): Case("object"),
    ("GET", "/datasets/<int:dataset_id>/supply-chain"): Case("object"),
    ("POST", "/datasets/<int:dataset_id>/uploads"): Case("object", {
        "path": "hijack.txt", "media_type": "text/plain", "size": 1, "sha256": "0" * 64}),
    ("PUT", "/uploads/<int:upload_id>/parts/<int:number>"): Case(
        "object", upload=b"hijack", upload_type="application/octet-stream"),
    ("GET", "/uploads/<int:upload_id>/parts"): Case("object"),
    ("GET", "/uploads/<int:upload_id>/parts/<int:number>/url"): Case("object"),
    ("POST", "/uploads/<int:upload_id>/complete"): Case("object"),
    ("DELETE", "/uploads/<int:upload_id>"): Case("object"),
    ("POST", "/datasets/<int:dataset_id>/file-versions"): Case(
        "object", {"upload_ids": ["{victim_upload}"]}),
    ("GET", "/versions/<int:version_id>/manifest"): Case("object"),
    ("GET", "/versions/<int:version_id>/files/proof"): Case("object",
                                                             query={"path": "victim.txt"}),
    ("GET", "/versions/<int:version_id>/files/content"): Case("object",
                                                               query={"path": "victim.txt"}),
    ("PUT", "/datasets/<int:dataset_id>/supply-chain"): Case("object", SHARES),
    ("POST", "/datasets/<int:dataset_id>/listing"): Case(
        "object", {"version": 1, "exchange_id": "{victim_exchange}"}),
    ("POST", "/datasets/<int:dataset_id>/listing/delist"): Case("object", {"text": "x"}),
    ("GET", "/datasets/<int:dataset_id>/offers"): Case("object"),
    ("POST", "/datasets/<int:dataset_id>/offers"): Case("object", {"terms": {
        "kind": "mall_package", "code": "hijack", "price": {"amount": "1.00", "currency": "CNY"}}}),
    ("POST", "/datasets/<int:dataset_id>/offers/<int:offer_id>/retire"): Case("object"),
    ("GET", "/listings/<int:listing_id>"): Case("object"),
    ("GET", "/review/listings"): Case("collection"),
    ("POST", "/listings/<int:listing_id>/approve"): Case("object", {"text": ""}),
    ("POST", "/listings/<int:listing_id>/reject"): Case(
        "object", {"reasons": ["other"], "text": "x"}),
    ("POST", "/listings/<int:listing_id>/suspend"): Case("object", {"text": "x"}),
    ("POST", "/listings/<int:listing_id>/reinstate"): Case("object", {"text": ""}),
    ("POST", "/listings/<int:listing_id>/delist"): Case("object", {"text": "x"}),
    ("POST", "/orders"): Case("object", {"items": [{"offer_id": "{victim_offer}"}],
                                         "payment_method": "bank_transfer"}),
    ("POST", "/token-packs"): Case("create", {"millions": 1, "payment_method": "bank_transfer"}),
    ("GET", "/orders"): Case("collection"),
    ("GET", "/orders/<int:order_id>"): Case("object"),
    ("POST", "/orders/<int:order_id>/cancel"): Case("object"),
    ("POST", "/orders/<int:order_id>/pay"): Case("object", {"method": "bank_transfer"}),
    ("GET", "/invoices/<int:invoice_id>"): Case("object"),
    ("POST", "/payment-methods/setup"): Case("disabled"),
    ("POST", "/payment-methods"): Case("disabled", {"payment_method": "pm_card_visa"}),
    ("GET", "/holdings"): Case("collection"),
    ("GET", "/orders/<int:order_id>/lines/<int:line_id>/download"): Case("object"),
    ("GET", "/orders/<int:order_id>/lines/<int:line_id>/certificate"): Case("object"),
    ("GET", "/certificates/<string:number>"): Case("public"),
    ("GET", "/finance/invoices"): Case("collection"),
    ("POST", "/invoices/<int:invoice_id>/receipts"): Case("object", {
        "amount": {"amount": "1.00", "currency": "CNY"}, "received_on": "2026-01-02",
        "bank_reference": "HIJACK-1"}),
    ("POST", "/payments/<int:payment_id>/refunds"): Case("object", {"bank_reference": "X-1"}),
    ("GET", "/finance/receipts"): Case("collection"),
    ("POST", "/receipts/<int:receipt_id>/confirm"): Case("object", {}),
    ("POST", "/receipts/<int:receipt_id>/reject"): Case("object", {"note": "x"}),
    ("POST", "/refunds/<int:refund_id>/retry"): Case("object"),
    ("GET", "/finance/payment-anomalies"): Case("platform"),
    ("GET", "/demands"): Case("collection"),
    ("POST", "/demands"): Case("create", {
        "title": "Mine", "sector": "healthcare", "modality": "text", "volume": "1 record",
        "budget": {"amount": "1.00", "currency": "CNY"}, "deadline": "2099-12-31"}),
    ("GET", "/demands/<int:demand_id>"): Case("object"),
    ("POST", "/demands/<int:demand_id>/cancel"): Case("object", {"reason": "x"}),
    ("POST", "/demands/<int:demand_id>/quotes"): Case("object", {
        "dataset_id": 1, "milestones": [
            {"kind": "acceptance", "amount": {"amount": "1.00", "currency": "CNY"}}]}),
    ("POST", "/quotes/<int:quote_id>/accept"): Case("object", {}),
    ("POST", "/quotes/<int:quote_id>/withdraw"): Case("object", {"reason": "x"}),
    ("GET", "/datasets/<int:dataset_id>/versions/<int:number>/records"): Case("object"),
    ("POST", "/datasets/<int:dataset_id>/versions/<int:number>/search"): Case(
        "object", {"query": "Victim"}),
    ("POST", "/tokens/count"): Case("create", {"text": "你好, world"}),
    ("POST", "/subscriptions"): Case("object", {"offer_id": "{victim_plan}",
                                                "payment_method": "bank_transfer"}),
    ("GET", "/subscriptions"): Case("collection"),
    ("GET", "/subscriptions/<int:subscription_id>"): Case("object"),
    ("POST", "/subscriptions/<int:subscription_id>/change-plan"): Case(
        "object", {"offer_id": "{victim_plan}"}),
    ("POST", "/subscriptions/<int:subscription_id>/cancel"): Case("object"),
    ("POST", "/subscriptions/<int:subscription_id>/resume"): Case("object"),
    ("GET", "/deals/<int:deal_id>"): Case("object"),
    ("POST", "/deals/<int:deal_id>/deliver"): Case("object", {"version": 1}),
    ("POST", "/deals/<int:deal_id>/accept"): Case("object", {"waiver_reason": "x"}),
    ("POST", "/deals/<int:deal_id>/dispute"): Case("object", {"reason": "x"}),
    ("GET", "/usage"): Case("collection"),
    # Reporting royalties on the victim's unlisted dataset: each event rejected as not found.
    ("POST", "/usage/events"): Case("create", {"events": [
        {"id": "e-1", "dataset_id": "{victim_dataset}", "tokens": 10,
         "occurred_at": "2026-01-01T00:00:00Z"},
        {"id": "e-2", "dataset_id": "{victim_dataset}", "tokens": 0,
         "occurred_at": "2026-01-01T00:00:00Z"}]}),
    ("GET", "/budgets/<int:budget_id>/report"): Case("object"),
    ("GET", "/budgets/<int:budget_id>/report/records"): Case("object"),
    ("GET", "/budgets/<int:budget_id>/report.xlsx"): Case("object"),
    ("GET", "/budgets/<int:budget_id>/report.csv"): Case("object"),
    # A foreign organization's own budget: in its default currency, CNY.
    ("POST", "/budgets"): Case("create", {"fiscal_year": 2030, "currency": "CNY",
                                          "name": "Mine"}),
    ("GET", "/budgets"): Case("collection"),
    ("GET", "/budgets/<int:budget_id>"): Case("object"),
    ("POST", "/budgets/<int:budget_id>/lines"): Case("object", {
        "code": "HIJACK", "name": "Hijack", "category": "other",
        "approved": {"amount": "1.00", "currency": "CNY"}}),
    ("POST", "/budget-lines/<int:budget_line_id>/amendments"): Case("object", {
        "kind": "decrease", "amount": {"amount": "1.00", "currency": "CNY"},
        "reason": "hijack"}),
    ("GET", "/budget-lines/<int:budget_line_id>/records"): Case("object"),
    ("PUT", "/budgets/<int:budget_id>/alert-webhook"): Case(
        "object", {"url": "http://127.0.0.1:9/hijack"}),
    ("POST", "/budgets/<int:budget_id>/alert-webhook/rotate-secret"): Case("object"),
    ("DELETE", "/budgets/<int:budget_id>/alert-webhook"): Case("object"),
    # Settlement statements: the victim's statement, reviewed by its own exchange.
    ("POST", "/statements/close"): Case("platform", {"period": "2020-01"}),
    ("GET", "/statements"): Case("collection"),
    ("GET", "/statements/<int:statement_id>"): Case("object"),
    ("POST", "/statements/<int:statement_id>/issue"): Case("object"),
    ("POST", "/statements/<int:statement_id>/review"): Case("object"),
    ("POST", "/statements/<int:statement_id>/approve"): Case("object"),
    ("POST", "/statements/<int:statement_id>/dispute"): Case("object", {"reason": "x"}),
    ("POST", "/statements/<int:statement_id>/resolve"): Case("object", {
        "amount": {"amount": "1.00", "currency": "CNY"}, "reason": "x"}),
    ("POST", "/statements/<int:statement_id>/pay"): Case("object", {"bank_reference": "X-1"}),
    ("POST", "/adjustments/<int:adjustment_id>/confirm"): Case("object", {}),
    ("POST", "/adjustments/<int:adjustment_id>/reject"): Case("object", {"note": "x"}),
    ("GET", "/statements/<int:statement_id>/export.csv"): Case("object"),
    ("GET", "/statements/<int:statement_id>/export.xlsx"): Case("object"),
    ("GET", "/statements/<int:statement_id>/export.pdf"): Case("object"),
    ("GET", "/statements/<int:statement_id>/export.zip"): Case("object"),
    ("GET", "/reconciliation"): Case("platform"),
    ("GET", "/reconciliation/export.csv"): Case("platform"),
    ("GET", "/reconciliation/export.xlsx"): Case("platform"),
    # Platform finance only: a buyer's verified tax status, and credit lines.
    ("PUT", "/organizations/<int:organization_id>/tax-status"): Case(
        "platform", {"status": "exempt", "evidence": "self-declared"}),
    ("GET", "/credit-lines"): Case("platform"),
    ("POST", "/credit-lines"): Case("platform", {
        "organization_id": "{victim_org}", "limit": {"amount": "1.00", "currency": "CNY"},
        "reason": "hijack"}),
    ("POST", "/credit-lines/<int:credit_line_id>/close"): Case("platform", {"reason": "x"}),
    ("GET", "/credit-line-changes"): Case("platform"),
    ("POST", "/credit-line-changes/<int:change_id>/approve"): Case("platform"),
    ("POST", "/credit-line-changes/<int:change_id>/reject"): Case("platform", {"reason": "x"}),
}

OPERATIONS = {(op.method, op.rule): op for op in api.operations}


def test_the_matrix_names_every_operation():
    assert set(MATRIX) == set(OPERATIONS)


CALLERS = ["anonymous", "owner", "member", "finance", "reviewer", "key:all", "key:one"]


@pytest.fixture()
def victim(session, passwords):
    """An organization with a person, a key, and a dataset under review at its own exchange."""
    org = make_org(session, "supplier", name="Victim Data Co")
    person = make_user(session, passwords, org, "owner", email="victim@victim.example.com")
    key, _ = make_key(session, org)
    exchange = make_org(session, "exchange", name="Victim Exchange")
    owner = accounts.principal_for_user(person, org.id)
    dataset = catalog.create_dataset(session, owner, VICTIM_DATASET)
    importer.import_version(session, owner, dataset, io.BytesIO(b'{"text": "Victim"}\n'),
                            source_format="jsonl", encoding="o200k_base")
    catalog.set_supply_chain(session, owner, dataset, [
        {"organization_id": org.id, "role": "supplier", "share_bps": 10_000}])
    offer = offers.add_offer(session, owner, dataset, {
        "kind": "mall_package", "code": "victim-pack",
        "price": {"amount": "99.00", "currency": "CNY"}})
    listing = listings.submit(session, owner, dataset, version_id=dataset.versions[0].id,
                              exchange_id=exchange.id, review_days=5)
    order = orders.new_order(session, organization_id=org.id, kind="mall", currency="CNY",
                             payment_method="bank_transfer")
    orders.priced_line(session, order, kind="mall_package", description="Victim package",
                       items=[LineItem("pack", "Victim package", 1,
                                       UnitPrice.of(Money("99.00", "CNY")))],
                       tax_rate="0.06", dataset_id=dataset.id,
                       version_id=dataset.versions[0].id, chain=False)
    session.flush()
    invoice = invoices.issue_invoice(session, order, BillingSettings())
    paid = orders.new_order(session, organization_id=org.id, kind="mall", currency="CNY",
                            payment_method="bank_transfer")
    orders.priced_line(session, paid, kind="mall_package", description="Victim paid",
                       items=[LineItem("pack", "Victim paid", 1,
                                       UnitPrice.of(Money("99.00", "CNY")))],
                       tax_rate="0.06", dataset_id=dataset.id, chain=False)
    paid.status, paid.paid_minor = "paid", paid.total_minor
    payment = Payment(order=paid, organization_id=org.id, method="bank_transfer",
                      status="succeeded", amount_minor=paid.total_minor, currency="CNY",
                      idempotency_key="victim-payment", applied=True,
                      split={"platform": "99.00", "tax": "5.94"})
    session.add(payment)
    # A card refund whose processor has not answered: a retry must not reach it.
    card_paid = Payment(order=paid, organization_id=org.id, method="card", status="succeeded",
                        amount_minor=paid.total_minor, currency="CNY", gateway_ref="pi_victim",
                        idempotency_key="victim-card-payment", refunded_minor=100,
                        split={"platform": "99.00", "tax": "5.94"})
    session.add(card_paid)
    session.flush()  # the refund names the order's id
    pending_refund = Refund(payment=card_paid, order_id=paid.id, organization_id=org.id,
                            amount_minor=100, currency="CNY", status="pending",
                            idempotency_key="victim-refund")
    session.add(pending_refund)
    # A custom deal: the victim quoted on an awarded demand of a buyer (neither is public).
    buyer = make_org(session, "buyer", name="Victim Buyer")
    buying = Principal(organization_id=buyer.id, member_role="owner",
                       org_roles=frozenset({"buyer"}))
    demand = deals.post_demand(session, buying, {
        "title": "Victim demand", "sector": "healthcare", "modality": "text", "volume": "1",
        "budget": {"amount": "10.00", "currency": "CNY"},
        "deadline": dt.date.today() + dt.timedelta(days=30)})
    quote = deals.submit_quote(session, owner, demand, {"dataset_id": dataset.id, "milestones": [
        {"kind": "acceptance", "amount": {"amount": "10.00", "currency": "CNY"}}],
        "criteria": {"overall": 1}})
    deal = deals.accept_quote(session, buying, quote)
    plan = offers.add_offer(session, owner, dataset, {
        "kind": "subscription", "code": "victim-plan", "period": "month",
        "price": {"amount": "10.00", "currency": "CNY"}, "included_tokens": 1000,
        "overage_per_million": {"amount": "1.00", "currency": "CNY"}})
    today = dt.date.today()
    subscription = Subscription(organization_id=org.id, dataset_id=dataset.id,
                                offer_id=plan.id, status="active", payment_method="card",
                                current_period_start=today,
                                current_period_end=today + dt.timedelta(days=30))
    session.add(subscription)
    last_month = today.replace(day=1) - dt.timedelta(days=1)
    statement = SettlementStatement(
        number=f"ST-VICTIM-{org.id}", organization_id=org.id, exchange_id=exchange.id,
        currency="CNY", period=f"{last_month:%Y-%m}", period_start=last_month.replace(day=1),
        period_end=today.replace(day=1),
        cutoff=dt.datetime.combine(today.replace(day=1), dt.time(), tzinfo=dt.timezone.utc),
        status="issued", opening_minor=0, activity_minor=9_900, closing_minor=9_900,
        totals={"sale": "99.00"}, content_hash="0" * 64, review_due_on=today)
    session.add(statement)
    session.flush()
    adjustment = StatementAdjustment(
        statement_id=statement.id, organization_id=org.id, currency="CNY", amount_minor=100,
        reason="Victim correction", reason_code="other", evidence={"lines": []},
        status="pending_approval")
    receipt = BankReceipt(invoice=invoice, amount_minor=100, currency="CNY",
                          received_on=today, bank_reference="VICTIM-RECEIPT",
                          status="pending_approval")
    session.add_all([adjustment, receipt])
    budget = Budget(organization_id=org.id, fiscal_year=today.year, currency="CNY",
                    name="Victim budget")
    session.add(budget)
    budget_line = BudgetLine(budget=budget, organization_id=org.id, code="VICTIM-01",
                             name="Victim line", category="data_purchase",
                             original_minor=10_000, approved_minor=10_000, committed_minor=0,
                             spent_minor=0)
    session.add(budget_line)
    # A draft version of files, and an upload on its way, in a dataset of their own.
    files_dataset = catalog.create_dataset(session, owner, VICTIM_DATASET)
    completed_upload = Upload(organization_id=org.id, dataset_id=files_dataset.id,
                              path="victim.txt", media_type="text/plain", size=7,
                              expected_sha256="1" * 64, token_profile="bytes-per-token/4",
                              store_upload_id="0" * 32, status="completed",
                              object_key=object_key("1" * 64), tokens=2, basis={"bytes": 7})
    pending_upload = Upload(organization_id=org.id, dataset_id=files_dataset.id,
                            path="victim-2.txt", media_type="text/plain", size=7,
                            expected_sha256="2" * 64, token_profile="bytes-per-token/4",
                            store_upload_id="0" * 32, status="pending")
    session.add_all([completed_upload, pending_upload])
    session.flush()
    file_version = files.create_file_version(session, owner, files_dataset,
                                             [completed_upload.id])
    invitation, invitation_token = accounts.invite_member(
        session, owner, org, email="friend@victim.example.com", role="owner")
    session.commit()
    return {"invitation": invitation, "invitation_token": invitation_token,
            "budget": budget, "budget_line": budget_line, "org": org, "email": person.email, "key": key, "dataset": dataset,
            "listing": listing, "exchange": exchange, "offer": offer, "order": order,
            "invoice": invoice, "payment": payment,
            "deal": deal, "subscription": subscription, "plan": plan, "statement": statement,
            "adjustment": adjustment, "receipt": receipt, "refund": pending_refund,
            "upload": pending_upload, "file_version": file_version}


@pytest.fixture()
def foreign(session):
    # Holding every marketplace role, the foreign organization gets past every role check,
    # so what stops it is ownership. Every role but the platform's: the platform is the
    # marketplace's operator, whose finance staff settle every organization's payments.
    org = make_org(session, *[r.value for r in OrgRole if r is not OrgRole.PLATFORM],
                   name="Foreign Co")
    session.commit()
    return org


def _caller(name, app, sign_in_as, session, foreign):
    client = app.test_client()
    if name == "anonymous":
        return client, {}, None
    if name.startswith("key:"):
        scopes = list(SCOPES) if name == "key:all" else ["catalog:read"]
        key, secret = make_key(session, foreign, scopes=scopes)
        session.commit()
        session.refresh(key)
        return client, {"Authorization": f"Bearer {secret}"}, accounts.principal_for_key(key)
    client = sign_in_as(foreign, name)
    principal = accounts.principal_for_user(client.user, foreign.id)
    return client, {"X-CSRFToken": csrf_token(client)}, principal


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("method, rule", sorted(MATRIX))
def test_foreign_and_anonymous_callers(app, sign_in_as, session, victim, foreign, caller,
                                       method, rule):
    case, op = MATRIX[(method, rule)], OPERATIONS[(method, rule)]
    client, headers, principal = _caller(caller, app, sign_in_as, session, foreign)
    ids = {"<int:organization_id>": victim["org"].id, "<int:key_id>": victim["key"].id,
           "<int:dataset_id>": victim["dataset"].id, "<int:number>": 1,
           "<int:listing_id>": victim["listing"].id, "<int:offer_id>": victim["offer"].id,
           "<int:order_id>": victim["order"].id, "<int:line_id>": victim["order"].lines[0].id,
           "<int:invoice_id>": victim["invoice"].id, "<int:payment_id>": victim["payment"].id,
           "<string:number>": "TC-20260101-UNKNOWN",
           "<int:demand_id>": victim["deal"].demand_id, "<int:quote_id>": victim["deal"].quote_id,
           "<int:deal_id>": victim["deal"].id,
           "<int:subscription_id>": victim["subscription"].id,
           "<int:statement_id>": victim["statement"].id,
           "<int:budget_id>": victim["budget"].id,
           "<int:budget_line_id>": victim["budget_line"].id,
           "<int:receipt_id>": victim["receipt"].id,
           "<int:adjustment_id>": victim["adjustment"].id,
           "<int:refund_id>": victim["refund"].id,
           "<int:invitation_id>": victim["invitation"].id,
           "<int:credit_line_id>": 1, "<int:change_id>": 1,
           "<int:upload_id>": victim["upload"].id,
           "<int:version_id>": victim["file_version"].id}
    path = "/api/v1" + rule
    for placeholder, value in ids.items():
        path = path.replace(placeholder, str(value))
    kwargs = {"headers": headers}
    if case.body is not None:
        body = json.dumps(case.body).replace("{victim_email}", victim["email"])
        body = body.replace('"{victim_org}"', str(victim["org"].id))
        body = body.replace('"{victim_exchange}"', str(victim["exchange"].id))
        body = body.replace('"{victim_offer}"', str(victim["offer"].id))
        body = body.replace('"{victim_plan}"', str(victim["plan"].id))
        body = body.replace('"{victim_dataset}"', str(victim["dataset"].id))
        body = body.replace("{victim_invitation}", victim["invitation_token"])
        body = body.replace('"{victim_upload}"', str(victim["upload"].id))
        kwargs["json"] = json.loads(body)
    if case.upload is not None:
        kwargs.update(data=case.upload, content_type=case.upload_type)
    if case.query is not None:
        kwargs["query_string"] = case.query
    response = client.open(path, method=method, **kwargs)
    status, text = response.status_code, response.get_data(as_text=True)

    if case.kind == "public":
        assert status in (200, 201, 202), text
        return
    if case.kind == "unknown":
        assert status == 404 and response.mimetype == "application/problem+json", text
        return
    if principal is None:
        assert status == 401 and "WWW-Authenticate" in response.headers
        assert response.mimetype == "application/problem+json"
        return
    if not principal.can(op.permission):
        assert status == 403, text
        return
    if case.kind == "platform":
        assert status == 403 and "platform" in text, text
        return
    if case.kind == "invitee":
        assert status == 403 and "another e-mail" in text, text
        session.refresh(victim["invitation"])
        assert victim["invitation"].status == "pending"
        assert len(victim["org"].memberships) == 1
        return
    if case.kind == "disabled":
        assert status == 409 and "bank transfer" in text, text
        return
    if case.kind == "object":
        assert status == 404, text
        assert "Victim" not in text and victim["key"].prefix not in text
        for name in ("key", "dataset", "listing", "offer"):
            session.refresh(victim[name])
        assert victim["offer"].retired_at is None and len(victim["dataset"].offers) == 2
        assert victim["key"].revoked_at is None and victim["key"].monthly_token_cap is None
        assert len(victim["org"].memberships) == 1
        session.refresh(victim["invitation"])
        assert victim["invitation"].status == "pending"
        assert victim["dataset"].title_en == "Victim dataset"
        assert len(victim["dataset"].versions) == 1
        assert victim["listing"].status == "submitted"
        for name in ("order", "invoice", "payment"):
            session.refresh(victim[name])
        assert victim["order"].status == "awaiting_payment"
        assert victim["invoice"].amount_received_minor == 0
        assert victim["payment"].refunded_minor == 0 and not victim["payment"].refunds
        session.refresh(victim["refund"])
        assert victim["refund"].status == "pending" and victim["refund"].gateway_ref is None
        session.refresh(victim["subscription"])
        assert victim["subscription"].status == "active"
        assert not victim["subscription"].cancel_at_period_end
        for deal_row in (victim["deal"], victim["deal"].demand, victim["deal"].quote):
            session.refresh(deal_row)
        assert victim["deal"].status == "in_progress" and victim["deal"].quote.status == "accepted"
        assert victim["deal"].demand.status == "awarded"
        session.refresh(victim["statement"])
        assert victim["statement"].status == "issued" and victim["statement"].paid_at is None
        session.refresh(victim["budget_line"])
        assert victim["budget_line"].approved_minor == 10_000
        for name in ("receipt", "adjustment"):
            session.refresh(victim[name])
            assert victim[name].status == "pending_approval"
        session.refresh(victim["budget"])
        assert [line.code for line in victim["budget"].lines] == ["VICTIM-01"]
        assert victim["budget"].webhook_url is None and victim["budget"].webhook_secret is None
        session.refresh(victim["upload"])
        assert victim["upload"].status == "pending"
        assert len(victim["file_version"].dataset.versions) == 1
    else:
        assert status in (200, 201), text
        assert "Victim" not in text and victim["key"].prefix not in text
        assert victim["email"] not in text and "受害者" not in text
        if (method, rule) == ("POST", "/usage/events"):
            results = response.get_json()["results"]
            assert [r["error"]["code"] for r in results] == ["not_found", "not_found"]


def test_permissions_table_names_only_known_scopes():
    assert all(rule.scope in SCOPES for rule in PERMISSIONS.values()
               if rule.scope not in (None, ANY_KEY))
