"""Custom deals: demand → quotes → accepted quote → milestone orders → delivery checked against
the quality report → acceptance or dispute → final payment grants the data and a certificate."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from sqlalchemy import select

from billing import deals, invoices
from billing.payments import bank_transfer
from billing.context import BillingSettings
from billing.settlement.ledger import trial_balance, unbalanced_transactions
from billing.models import Certificate, Deal, DealQuote, Demand, Entitlement, Order
from market.accounts import services as accounts
from market.accounts.models import Organization
from market.accounts.authz import Principal
from market.core.audit import AuditEntry
from market.catalog import importer
from market.catalog import services as catalog
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from pricing.money import Money
from tests.concurrency import at_once, fresh_app, postgresql_only
from tests.factories import make_key, make_org, make_user
from tests.fixtures import csrf_token

SETTINGS = BillingSettings(certificate_key=b"k" * 32)
DATASET = {"title_zh": "定制数据", "title_en": "Custom data", "sector": "healthcare",
           "modality": "text", "ai_stage": "pretraining", "licence": "research_only",
           "personal_information": "none"}
# Distinct records: structural 100, diversity 94, adaptability 100, accuracy not assessed.
GOOD = "".join(json.dumps({"text": f"Record number {i} about topic {i * 7} with words "
                                   f"alpha{i} beta{i}"}) + "\n" for i in range(40)).encode()
# The same record ten times: diversity 10.
REPEATED = b'{"text": "same"}\n' * 10
FUTURE = dt.date.today() + dt.timedelta(days=60)


def principal_of(org, *roles, user=None) -> Principal:
    return Principal(organization_id=org.id, user_id=user.id if user else None,
                     member_role="owner", org_roles=frozenset(roles))


def demand_values(**changes):
    return {"title": "Hospital discharge notes", "sector": "healthcare", "modality": "text",
            "volume": "50,000 records", "thresholds": {"structural_integrity": 90},
            "budget": {"amount": "10000.00", "currency": "CNY"}, "deadline": FUTURE} | changes


def milestones(deposit="3000.00", delivery="4000.00", acceptance="2000.00"):
    return [{"kind": "deposit", "amount": {"amount": deposit, "currency": "CNY"}},
            {"kind": "delivery", "amount": {"amount": delivery, "currency": "CNY"}},
            {"kind": "acceptance", "amount": {"amount": acceptance, "currency": "CNY"}}]


def supplier_with_dataset(session, name):
    org = make_org(session, "supplier", name=name)
    supplier = principal_of(org, "supplier")
    dataset = catalog.create_dataset(session, supplier, DATASET)
    catalog.set_supply_chain(session, supplier, dataset, [
        {"organization_id": org.id, "role": "supplier", "share_bps": 10_000}])
    return supplier, dataset


def import_version(session, principal, dataset, body):
    return importer.import_version(session, principal, dataset, io.BytesIO(body),
                                   source_format="jsonl", encoding="o200k_base")


@pytest.fixture()
def market(session):
    buyer_org = make_org(session, "buyer", name="Provincial Health Bureau")
    buyer = principal_of(buyer_org, "buyer")
    first, first_dataset = supplier_with_dataset(session, "First Data Co")
    second, second_dataset = supplier_with_dataset(session, "Second Data Co")
    finance = principal_of(make_org(session, "platform", name="Platform"), "platform")
    return {"buyer": buyer, "first": first, "first_dataset": first_dataset,
            "second": second, "second_dataset": second_dataset, "finance": finance}


def pay_by_bank(session, market, order, reference):
    invoice = invoices.issue_invoice(session, order, SETTINGS)
    bank_transfer.record_bank_receipt(session, market["finance"], invoice, amount=order.total,
                                      received_on=dt.date.today(), bank_reference=reference,
                                      settings=SETTINGS)
    assert order.status == "paid"


def quoted_deal(session, market, *, criteria=None):
    demand = deals.post_demand(session, market["buyer"], demand_values())
    quote = deals.submit_quote(session, market["first"], demand, {
        "dataset_id": market["first_dataset"].id, "milestones": milestones(),
        "criteria": criteria or {"structural_integrity": 95, "content_diversity": 50}})
    return deals.accept_quote(session, market["buyer"], quote)


def by_milestone(session, deal):
    return {o.milestone: o for o in deals.milestone_orders(session, deal)}


def test_the_whole_journey(session, market):
    buyer, first, second = market["buyer"], market["first"], market["second"]
    demand = deals.post_demand(session, buyer, demand_values())
    assert demand.status == "open"
    assert [d.id for d in deals.list_open_demands(session, first).all()] == [demand.id]
    assert deals.list_open_demands(session, buyer).all() == []  # not its own

    chosen = deals.submit_quote(session, first, demand, {
        "dataset_id": market["first_dataset"].id, "milestones": milestones(),
        "criteria": {"structural_integrity": 95, "content_diversity": 50}, "note": "8 weeks"})
    other = deals.submit_quote(session, second, demand, {
        "dataset_id": market["second_dataset"].id,
        "milestones": milestones("5000.00", "5000.00", "2000.00")})
    assert chosen.criteria == {"structural_integrity": 95, "content_diversity": 50}
    assert other.criteria == {"structural_integrity": 90}  # the demand's thresholds
    assert deals.gross_total(deals.quote_terms(chosen)) == Money("9540.00", "CNY")
    assert not deals.over_budget(chosen)

    deal = deals.accept_quote(session, buyer, chosen)
    session.refresh(other)
    assert (demand.status, chosen.status, other.status) == ("awarded", "accepted", "declined")
    orders = by_milestone(session, deal)
    assert list(orders) == ["deposit", "delivery", "acceptance"]
    assert [o.status for o in orders.values()] == ["awaiting_payment", "scheduled",
                                                   "scheduled"]
    assert orders["deposit"].payable_at is not None
    deposit_line = orders["deposit"].lines[0]
    assert (deposit_line.subtotal_minor, deposit_line.tax_minor) == (300_000, 18_000)
    assert deposit_line.dataset_id == market["first_dataset"].id
    assert deposit_line.shares == [[f"supplier:{first.organization_id}", 10_000]]

    with pytest.raises(Conflict, match="deposit"):
        deals.deliver(session, first, deal, version_number=1)
    pay_by_bank(session, market, orders["deposit"], "BANK-DEPOSIT-1")

    version = import_version(session, first, market["first_dataset"], GOOD)
    deals.deliver(session, first, deal, version_number=version.number)
    assert deal.status == "delivered" and deal.delivered_version_id == version.id
    assert deal.acceptance == {
        "content_diversity": {"threshold": 50, "score": 94, "passed": True},
        "structural_integrity": {"threshold": 95, "score": 100, "passed": True}}
    assert orders["delivery"].status == "awaiting_payment"
    assert orders["acceptance"].status == "scheduled"
    assert version.locked_at is not None
    pay_by_bank(session, market, orders["delivery"], "BANK-DELIVERY-1")

    deals.accept_delivery(session, buyer, deal)
    assert deal.status == "accepted" and orders["acceptance"].status == "awaiting_payment"
    assert session.scalars(select(Entitlement).where(
        Entitlement.organization_id == buyer.organization_id)).all() == []
    pay_by_bank(session, market, orders["acceptance"], "BANK-ACCEPTANCE-1")

    entitlement = session.scalars(select(Entitlement).where(
        Entitlement.organization_id == buyer.organization_id)).one()
    assert (entitlement.kind, entitlement.version_id, entitlement.valid_until) == (
        "download", version.id, None)
    certificate = session.scalars(select(Certificate).where(
        Certificate.organization_id == buyer.organization_id)).one()
    assert certificate.payload["version"]["content_sha256"] == version.content_sha256
    assert trial_balance(session) == {"CNY": 0}
    assert unbalanced_transactions(session) == []
    actions = set(session.scalars(select(AuditEntry.action)))
    assert {"demand.posted", "quote.submitted", "quote.accepted", "deal.delivered",
            "deal.accepted", "deal.milestone_paid", "deal.completed"} <= actions


def test_a_quote_above_the_budget_is_allowed_and_flagged(session, market):
    demand = deals.post_demand(session, market["buyer"], demand_values())
    quote = deals.submit_quote(session, market["first"], demand, {
        "dataset_id": market["first_dataset"].id,
        "milestones": milestones("5000.00", "5000.00", "2000.00")})
    assert deals.over_budget(quote)


def test_a_failing_criterion_is_shown_and_blocks_a_plain_acceptance(session, market):
    deal = quoted_deal(session, market, criteria={"content_diversity": 60,
                                                  "annotation_accuracy": 80})
    pay_by_bank(session, market, by_milestone(session, deal)["deposit"], "BANK-F-1")
    import_version(session, market["first"], market["first_dataset"], REPEATED)
    deals.deliver(session, market["first"], deal, version_number=1)
    assert deal.acceptance["content_diversity"] == {"threshold": 60, "score": 10,
                                                    "passed": False}
    # Not assessed by the report: nothing shows the criterion is met.
    assert deal.acceptance["annotation_accuracy"] == {"threshold": 80, "score": None,
                                                      "passed": False}
    assert deals.failed_criteria(deal) == ["annotation_accuracy", "content_diversity"]
    with pytest.raises(Conflict) as caught:
        deals.accept_delivery(session, market["buyer"], deal)
    assert caught.value.field == "waiver_reason"
    assert by_milestone(session, deal)["acceptance"].status == "scheduled"

    deals.accept_delivery(session, market["buyer"], deal,
                          waiver_reason="Deduplicated on our side; price agreed.")
    assert deal.status == "accepted"
    assert deal.acceptance["content_diversity"]["waived"].startswith("Deduplicated")
    assert by_milestone(session, deal)["acceptance"].status == "awaiting_payment"


def test_the_buyer_disputes_and_the_supplier_delivers_again(session, market):
    deal = quoted_deal(session, market, criteria={"content_diversity": 60})
    pay_by_bank(session, market, by_milestone(session, deal)["deposit"], "BANK-D-1")
    import_version(session, market["first"], market["first_dataset"], REPEATED)
    deals.deliver(session, market["first"], deal, version_number=1)
    with pytest.raises(Forbidden):
        deals.dispute(session, market["first"], deal, reason="x")
    with pytest.raises(InvalidInput) as caught:
        deals.dispute(session, market["buyer"], deal, reason="  ")
    assert caught.value.field == "reason"
    deals.dispute(session, market["buyer"], deal, reason="Mostly duplicates.")
    assert (deal.status, deal.dispute_reason) == ("disputed", "Mostly duplicates.")
    with pytest.raises(Conflict):
        deals.accept_delivery(session, market["buyer"], deal)

    import_version(session, market["first"], market["first_dataset"], GOOD)
    deals.deliver(session, market["first"], deal, version_number=2)
    assert deal.status == "delivered" and deals.failed_criteria(deal) == []


def test_accepting_a_quote_twice_conflicts(session, market):
    demand = deals.post_demand(session, market["buyer"], demand_values())
    quote = deals.submit_quote(session, market["first"], demand, {
        "dataset_id": market["first_dataset"].id, "milestones": milestones()})
    other = deals.submit_quote(session, market["second"], demand, {
        "dataset_id": market["second_dataset"].id, "milestones": milestones()})
    deals.accept_quote(session, market["buyer"], quote)
    with pytest.raises(Conflict, match="already been accepted"):
        deals.accept_quote(session, market["buyer"], quote)
    with pytest.raises(Conflict):
        deals.accept_quote(session, market["buyer"], other)
    assert len(session.scalars(select(Deal).where(Deal.demand_id == demand.id)).all()) == 1
    assert len(session.scalars(select(Order).where(Order.kind == "custom")).all()) == 3


def test_the_losing_accept_of_a_race_conflicts(session, market):
    demand = deals.post_demand(session, market["buyer"], demand_values())
    quote = deals.submit_quote(session, market["first"], demand, {
        "dataset_id": market["first_dataset"].id, "milestones": milestones()})
    # Another request awarded the demand after this one read it as open.
    session.execute(Demand.__table__.update().where(Demand.id == demand.id)
                    .values(status="awarded"))
    with pytest.raises(Conflict, match="at the same time"):
        deals.accept_quote(session, market["buyer"], quote)
    assert session.scalars(select(Deal)).all() == []


@pytest.mark.parametrize("changes, field", [
    ({"thresholds": {"overall": 101}}, "thresholds.overall"),
    ({"thresholds": {"structural_integrity": "90"}}, "thresholds.structural_integrity"),
    ({"thresholds": {"beauty": 50}}, "thresholds.beauty"),
    ({"budget": {"amount": "0", "currency": "CNY"}}, "budget.amount"),
    ({"deadline": dt.date(2020, 1, 1)}, "deadline"),
    ({"sector": "astrology"}, "sector"),
    ({"title": " "}, "title"),
])
def test_bad_demands_name_the_field(session, market, changes, field):
    with pytest.raises(InvalidInput) as caught:
        deals.post_demand(session, market["buyer"], demand_values(**changes))
    assert caught.value.field == field


@pytest.mark.parametrize("changes, field", [
    ({"criteria": {"content_diversity": -1}}, "criteria.content_diversity"),
    ({"criteria": {"structural_integrity": 80}}, "criteria.structural_integrity"),
    ({"criteria": {"speed": 80}}, "criteria.speed"),
    ({"milestones": milestones()[:2]}, "milestones"),
    ({"milestones": [milestones()[1], milestones()[0], milestones()[2]]}, "milestones[1].kind"),
    ({"milestones": [{"kind": "acceptance", "amount": {"amount": "1", "currency": "USD"}}]},
     "milestones[0].amount.currency"),
    ({"milestones": [{"kind": "acceptance", "amount": {"amount": "-1", "currency": "CNY"}}]},
     "milestones[0].amount"),
])
def test_bad_quotes_name_the_field(session, market, changes, field):
    demand = deals.post_demand(session, market["buyer"], demand_values())
    values = {"dataset_id": market["first_dataset"].id, "milestones": milestones()} | changes
    with pytest.raises(InvalidInput) as caught:
        deals.submit_quote(session, market["first"], demand, values)
    assert caught.value.field == field


def test_quoting_rules(session, market):
    demand = deals.post_demand(session, market["buyer"], demand_values())
    values = {"dataset_id": market["first_dataset"].id, "milestones": milestones()}
    with pytest.raises(NotFound):  # another organization's dataset
        deals.submit_quote(session, market["second"], demand, values)
    deals.submit_quote(session, market["first"], demand, values)
    with pytest.raises(Conflict, match="already quoted"):
        deals.submit_quote(session, market["first"], demand, values)
    with pytest.raises(Conflict, match="own demand"):
        deals.submit_quote(session, market["buyer"], demand, values)


def test_who_sees_a_demand_and_a_deal(session, market):
    deal = quoted_deal(session, market)
    outsider = principal_of(make_org(session, "supplier"), "supplier")
    for principal in (market["buyer"], market["first"]):
        assert deals.get_deal(session, principal, deal.id) is deal
        assert deals.get_demand(session, principal, deal.demand_id)
    for call in (lambda: deals.get_deal(session, outsider, deal.id),
                 lambda: deals.get_demand(session, outsider, deal.demand_id),
                 lambda: deals.get_quote_for_buyer(session, market["first"], deal.quote_id)):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(Forbidden):
        deals.deliver(session, market["buyer"], deal, version_number=1)
    with pytest.raises(Forbidden):
        deals.accept_delivery(session, market["first"], deal)


# Cancelling a demand, withdrawing a quote ------------------------------------------------------

def two_quotes(session, market):
    demand = deals.post_demand(session, market["buyer"], demand_values())
    quotes = [deals.submit_quote(session, market[who], demand, {
        "dataset_id": market[f"{who}_dataset"].id, "milestones": milestones()})
        for who in ("first", "second")]
    return demand, quotes


def audit_entries(session, action):
    return session.scalars(select(AuditEntry).where(AuditEntry.action == action)).all()


def test_cancelling_a_demand_declines_its_open_quotes(session, market):
    demand, (first, second) = two_quotes(session, market)
    deals.withdraw_quote(session, market["second"], second)
    assert deals.cancel_demand(session, market["buyer"], demand,
                               reason="  The project was stopped. ") is demand
    assert (demand.status, first.status, second.status) == ("cancelled", "declined",
                                                             "withdrawn")
    session.expire_all()
    assert session.get(Demand, demand.id).status == "cancelled"
    entry, = audit_entries(session, "demand.cancelled")
    assert entry.object_id == str(demand.id)
    assert entry.organization_id == market["buyer"].organization_id
    assert entry.data == {"reason": "The project was stopped.", "declined": [first.id]}
    assert deals.list_open_demands(session, market["first"]).all() == []
    # The supplier that quoted still sees the demand, and how it ended.
    assert deals.get_demand(session, market["first"], demand.id) is demand

    with pytest.raises(Conflict, match="declined; it cannot be accepted") as caught:
        deals.accept_quote(session, market["buyer"], first)
    assert caught.value.field == "quote"
    with pytest.raises(Conflict, match="only an open demand") as caught:
        deals.cancel_demand(session, market["buyer"], demand, reason="Again")
    assert caught.value.field == "demand"
    with pytest.raises(Conflict, match="takes no more quotes"):
        deals.submit_quote(session, principal_of(make_org(session, "supplier"), "supplier"),
                           demand, {"dataset_id": market["first_dataset"].id,
                                    "milestones": milestones()})
    with pytest.raises(Conflict) as caught:
        deals.withdraw_quote(session, market["first"], first)
    assert caught.value.field == "quote"
    assert session.scalars(select(Deal)).all() == []
    assert len(audit_entries(session, "demand.cancelled")) == 1


def test_no_quote_of_a_cancelled_demand_can_be_accepted(session, market):
    demand, (first, second) = two_quotes(session, market)
    deals.cancel_demand(session, market["buyer"], demand, reason="Budget withdrawn")
    # Even a quote whose decline this session has not seen: the demand is cancelled.
    session.execute(DealQuote.__table__.update().where(DealQuote.id == first.id)
                    .values(status="submitted"))
    session.expire(first, ["status"])
    with pytest.raises(Conflict, match="cancelled") as caught:
        deals.accept_quote(session, market["buyer"], first)
    assert caught.value.field == "demand"
    assert session.scalars(select(Deal)).all() == []
    assert session.scalars(select(Order).where(Order.kind == "custom")).all() == []


def test_an_awarded_demand_cannot_be_cancelled(session, market):
    deal = quoted_deal(session, market)
    with pytest.raises(Conflict, match="awarded; only an open demand") as caught:
        deals.cancel_demand(session, market["buyer"], deal.demand, reason="Changed our mind")
    assert caught.value.field == "demand"
    session.expire_all()
    assert session.get(Demand, deal.demand_id).status == "awarded"
    assert session.get(DealQuote, deal.quote_id).status == "accepted"
    assert audit_entries(session, "demand.cancelled") == []


def test_a_withdrawn_quote_cannot_be_accepted(session, market):
    demand, (first, second) = two_quotes(session, market)
    assert deals.withdraw_quote(session, market["first"], first) is first
    assert (first.status, demand.status) == ("withdrawn", "open")
    entry, = audit_entries(session, "quote.withdrawn")
    assert (entry.object_type, entry.object_id) == ("deal_quote", str(first.id))
    assert entry.data == {"demand_id": demand.id, "reason": None}
    with pytest.raises(Conflict, match="withdrawn; it cannot be accepted") as caught:
        deals.accept_quote(session, market["buyer"], first)
    assert caught.value.field == "quote"
    with pytest.raises(Conflict, match="withdrawn; only a quote awaiting") as caught:
        deals.withdraw_quote(session, market["first"], first)
    assert caught.value.field == "quote"
    with pytest.raises(Conflict, match="already quoted"):  # a withdrawn quote is final
        deals.submit_quote(session, market["first"], demand, {
            "dataset_id": market["first_dataset"].id, "milestones": milestones()})

    # The demand stays open: the other quote can still be accepted; the withdrawn one is
    # not declined.
    deals.accept_quote(session, market["buyer"], second)
    session.expire_all()
    assert [(q.id, q.status) for q in session.get(Demand, demand.id).quotes] == [
        (first.id, "withdrawn"), (second.id, "accepted")]
    assert session.scalars(select(AuditEntry).where(
        AuditEntry.action == "quote.accepted")).one().data["declined"] == []


@pytest.mark.parametrize("status", ["accepted", "declined"])
def test_a_decided_quote_cannot_be_withdrawn(session, market, status):
    demand, (first, second) = two_quotes(session, market)
    deals.accept_quote(session, market["buyer"], first if status == "accepted" else second)
    with pytest.raises(Conflict, match=f"{status}; only a quote awaiting") as caught:
        deals.withdraw_quote(session, market["first"], first, reason="Too late")
    assert caught.value.field == "quote"
    assert first.status == status and audit_entries(session, "quote.withdrawn") == []


def test_only_the_buyer_cancels_and_only_the_supplier_withdraws(session, market):
    demand, (first, second) = two_quotes(session, market)
    other_supplier = principal_of(make_org(session, "supplier"), "supplier")
    other_buyer = principal_of(make_org(session, "buyer"), "buyer")
    # Who may see the demand but is not its buyer: 403. Anyone else: 404.
    for who in (market["first"], other_supplier):
        with pytest.raises(Forbidden, match="Only the buyer"):
            deals.cancel_demand(session, who, demand, reason="x")
    with pytest.raises(NotFound):
        deals.cancel_demand(session, other_buyer, demand, reason="x")
    # The buyer sees the quote but cannot withdraw it; another supplier does not see it.
    assert deals.get_quote(session, market["buyer"], first.id) is first
    with pytest.raises(Forbidden, match="Only the supplier"):
        deals.withdraw_quote(session, market["buyer"], first)
    for who in (market["second"], other_supplier, other_buyer):
        with pytest.raises(NotFound):
            deals.get_quote(session, who, first.id)
        with pytest.raises(NotFound):
            deals.withdraw_quote(session, who, first)
    session.expire_all()
    assert session.get(Demand, demand.id).status == "open"
    assert {q.status for q in session.get(Demand, demand.id).quotes} == {"submitted"}
    assert audit_entries(session, "demand.cancelled") == audit_entries(
        session, "quote.withdrawn") == []


@pytest.mark.parametrize("reason", [None, "", "   ", 42, "x" * 2_001])
def test_a_cancel_without_a_proper_reason_names_the_field(session, market, reason):
    demand, quotes = two_quotes(session, market)
    with pytest.raises(InvalidInput) as caught:
        deals.cancel_demand(session, market["buyer"], demand, reason=reason)
    assert caught.value.field == "reason"
    session.expire_all()
    assert session.get(Demand, demand.id).status == "open"
    assert {q.status for q in session.get(Demand, demand.id).quotes} == {"submitted"}
    assert audit_entries(session, "demand.cancelled") == []


@pytest.mark.parametrize("reason", [42, "x" * 2_001])
def test_a_bad_withdrawal_reason_names_the_field(session, market, reason):
    demand, (first, second) = two_quotes(session, market)
    with pytest.raises(InvalidInput) as caught:
        deals.withdraw_quote(session, market["first"], first, reason=reason)
    assert caught.value.field == "reason"
    session.expire_all()
    assert session.get(DealQuote, first.id).status == "submitted"
    assert audit_entries(session, "quote.withdrawn") == []


def test_the_losing_cancel_of_a_race_conflicts(session, market):
    demand, quotes = two_quotes(session, market)
    # An accept in another request awarded the demand after this one read it as open.
    session.execute(Demand.__table__.update().where(Demand.id == demand.id)
                    .values(status="awarded"))
    with pytest.raises(Conflict, match="at the same time") as caught:
        deals.cancel_demand(session, market["buyer"], demand, reason="Stopped")
    assert caught.value.field == "demand"
    assert {q.status for q in quotes} == {"submitted"}
    assert audit_entries(session, "demand.cancelled") == []


def test_an_accept_losing_to_a_withdrawal_writes_nothing(session, market):
    demand, (first, second) = two_quotes(session, market)
    # The supplier withdrew after this request read the quote as submitted.
    session.execute(DealQuote.__table__.update().where(DealQuote.id == first.id)
                    .values(status="withdrawn"))
    with pytest.raises(Conflict, match="withdrew this quote at the same time"):
        with session.begin_nested():  # the request's rollback, here a savepoint's
            deals.accept_quote(session, market["buyer"], first)
    session.expire_all()
    assert session.get(Demand, demand.id).status == "open"
    assert session.get(DealQuote, second.id).status == "submitted"
    assert session.scalars(select(Deal)).all() == []


def test_a_withdrawal_losing_to_the_buyers_decision_conflicts(session, market):
    demand, (first, second) = two_quotes(session, market)
    # The buyer accepted the quote after this request read it as submitted.
    session.execute(DealQuote.__table__.update().where(DealQuote.id == first.id)
                    .values(status="accepted"))
    with pytest.raises(Conflict, match="at the same time") as caught:
        deals.withdraw_quote(session, market["first"], first)
    assert caught.value.field == "quote"
    assert audit_entries(session, "quote.withdrawn") == []


# Through the API --------------------------------------------------------------------------------

def _post(client, path, body):
    return client.post(path, json=body, headers={"X-CSRFToken": csrf_token(client)})


def test_the_journey_through_the_api(session, sign_in_as, passwords, market):
    buyer_org = make_org(session, "buyer", name="API Buyer")
    supplier_org = make_org(session, "supplier", name="API Supplier")
    supplier_person = make_user(session, passwords, supplier_org, "owner")
    supplier = accounts.principal_for_user(supplier_person, supplier_org.id)
    dataset = catalog.create_dataset(session, supplier, DATASET)
    catalog.set_supply_chain(session, supplier, dataset, [
        {"organization_id": supplier_org.id, "role": "supplier", "share_bps": 10_000}])
    import_version(session, supplier, dataset, GOOD)
    session.commit()
    buyer_client, supplier_client = sign_in_as(buyer_org, "owner"), sign_in_as(supplier_org)

    body = demand_values(deadline=FUTURE.isoformat(), thresholds={"overall": 101})
    response = _post(buyer_client, "/api/v1/demands", body)
    assert response.status_code == 422
    assert "thresholds.overall" in response.get_json()["errors"]
    response = _post(buyer_client, "/api/v1/demands", body | {"thresholds": {"overall": 80}})
    assert response.status_code == 201, response.get_data(as_text=True)
    demand_id = response.get_json()["id"]
    assert response.headers["Location"].endswith(f"/demands/{demand_id}")

    listed = supplier_client.get("/api/v1/demands?role=supplier").get_json()["items"]
    assert [d["id"] for d in listed] == [demand_id]
    assert buyer_client.get("/api/v1/demands?role=supplier").status_code == 403
    assert [d["id"] for d in buyer_client.get("/api/v1/demands").get_json()["items"]] == [
        demand_id]

    response = _post(supplier_client, f"/api/v1/demands/{demand_id}/quotes", {
        "dataset_id": dataset.id, "milestones": milestones(),
        "criteria": {"overall": 90}})
    assert response.status_code == 201, response.get_data(as_text=True)
    quote = response.get_json()
    assert quote["total"] == {"amount": "9540.00", "currency": "CNY"}
    assert quote["over_budget"] is False
    detail = buyer_client.get(f"/api/v1/demands/{demand_id}").get_json()
    assert [q["id"] for q in detail["quotes"]] == [quote["id"]]

    response = _post(buyer_client, f"/api/v1/quotes/{quote['id']}/accept", {})
    assert response.status_code == 201, response.get_data(as_text=True)
    deal = response.get_json()
    assert [(m["milestone"], m["status"]) for m in deal["milestones"]] == [
        ("deposit", "awaiting_payment"), ("delivery", "scheduled"),
        ("acceptance", "scheduled")]
    again = _post(buyer_client, f"/api/v1/quotes/{quote['id']}/accept", {})
    assert again.status_code == 409

    order = session.get(Order, deal["milestones"][0]["order_id"])
    pay_by_bank(session, market, order, "BANK-API-1")
    session.commit()

    response = _post(supplier_client, f"/api/v1/deals/{deal['id']}/deliver", {"version": 9})
    assert response.status_code == 422 and "version" in response.get_json()["errors"]
    response = _post(supplier_client, f"/api/v1/deals/{deal['id']}/deliver", {"version": 1})
    assert response.status_code == 200, response.get_data(as_text=True)
    delivered = response.get_json()
    assert delivered["acceptance"] == {"overall": {"threshold": 90, "score": 98,
                                                   "passed": True}}
    assert delivered["delivered_version"] == 1
    assert _post(supplier_client, f"/api/v1/deals/{deal['id']}/accept", {}).status_code == 403

    response = _post(buyer_client, f"/api/v1/deals/{deal['id']}/accept", {})
    assert response.status_code == 200, response.get_data(as_text=True)
    accepted = buyer_client.get(f"/api/v1/deals/{deal['id']}").get_json()
    assert accepted["status"] == "accepted"
    assert [m["status"] for m in accepted["milestones"]] == ["paid", "awaiting_payment",
                                                            "awaiting_payment"]
    response = _post(buyer_client, f"/api/v1/deals/{deal['id']}/dispute", {"reason": "late"})
    assert response.status_code == 409


def test_cancel_and_withdraw_through_the_api(session, sign_in_as, market):
    demand, (first, second) = two_quotes(session, market)
    outsider = make_org(session, "supplier", name="Outsider Data Co")
    stranger = make_org(session, "buyer", name="Stranger Bureau")
    session.commit()
    buyer_client, first_client, second_client = (
        sign_in_as(session.get(Organization, market[who].organization_id))
        for who in ("buyer", "first", "second"))
    cancel = f"/api/v1/demands/{demand.id}/cancel"
    withdraw = f"/api/v1/quotes/{second.id}/withdraw"

    # Only the buyer cancels: suppliers that may see the demand get 403, anyone else 404.
    assert _post(first_client, cancel, {"reason": "x"}).status_code == 403
    assert _post(sign_in_as(outsider), cancel, {"reason": "x"}).status_code == 403
    assert _post(sign_in_as(stranger), cancel, {"reason": "x"}).status_code == 404
    # Only the quoting supplier withdraws: the buyer may not supply (403); another supplier
    # does not see the quote (404).
    assert _post(buyer_client, withdraw, {}).status_code == 403
    assert _post(first_client, withdraw, {}).status_code == 404
    # Bad input names the field and writes nothing.
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": 7}, {"reason": "x" * 2_001}):
        response = _post(buyer_client, cancel, body)
        assert response.status_code == 422, body
        assert response.mimetype == "application/problem+json"
        assert list(response.get_json()["errors"]) == ["reason"], body
    response = _post(second_client, withdraw, {"reason": "x" * 2_001})
    assert response.status_code == 422 and list(response.get_json()["errors"]) == ["reason"]
    session.expire_all()
    assert session.get(Demand, demand.id).status == "open"
    assert [q.status for q in session.get(Demand, demand.id).quotes] == ["submitted"] * 2

    response = _post(second_client, withdraw, {})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert (response.get_json()["id"], response.get_json()["status"]) == (second.id,
                                                                          "withdrawn")
    response = _post(buyer_client, f"/api/v1/quotes/{second.id}/accept", {})
    assert response.status_code == 409 and "quote" in response.get_json()["errors"]

    response = _post(buyer_client, cancel, {"reason": "The project was stopped."})
    assert response.status_code == 200, response.get_data(as_text=True)
    cancelled = response.get_json()
    assert cancelled["demand"]["status"] == "cancelled"
    assert [(q["id"], q["status"]) for q in cancelled["quotes"]] == [
        (first.id, "declined"), (second.id, "withdrawn")]
    again = _post(buyer_client, cancel, {"reason": "Again"})
    assert again.status_code == 409 and "demand" in again.get_json()["errors"]
    assert "only an open demand" in again.get_json()["detail"]
    response = _post(buyer_client, f"/api/v1/quotes/{first.id}/accept", {})
    assert response.status_code == 409
    response = _post(first_client, f"/api/v1/quotes/{first.id}/withdraw", {})
    assert response.status_code == 409 and "quote" in response.get_json()["errors"]
    # The supplier still sees the demand and how its quote ended; the demand is no longer
    # offered to quote on.
    detail = first_client.get(f"/api/v1/demands/{demand.id}").get_json()
    assert detail["demand"]["status"] == "cancelled"
    assert [q["status"] for q in detail["quotes"]] == ["declined"]
    assert first_client.get("/api/v1/demands?role=supplier").get_json()["items"] == []
    assert session.scalars(select(Deal)).all() == []


# A real race (PostgreSQL): four accepts of one demand's two quotes at the same moment -----------

only_on_postgresql = postgresql_only("concurrent transactions only mean something on PostgreSQL")


@only_on_postgresql
def test_racing_accepts_award_the_demand_once(database_url, tmp_path):
    with fresh_app(database_url, tmp_path) as app:
        database = app.extensions["market.db"]
        with database.session() as session, session.begin():
            buyer_org = make_org(session, "buyer")
            buyer = principal_of(buyer_org, "buyer")
            first, first_dataset = supplier_with_dataset(session, "Racer One")
            second, second_dataset = supplier_with_dataset(session, "Racer Two")
            demand = deals.post_demand(session, buyer, demand_values())
            quote_ids = [deals.submit_quote(session, who, demand, {
                "dataset_id": dataset.id, "milestones": milestones()}).id
                for who, dataset in ((first, first_dataset), (second, second_dataset))]
            secrets = [make_key(session, buyer_org, scopes=("billing:write",))[1]
                       for _ in range(4)]
            demand_id = demand.id
        statuses = _race(app, [(f"/api/v1/quotes/{quote_ids[i % 2]}/accept", {}, secrets[i])
                               for i in range(4)])
        assert sorted(statuses) == [201, 409, 409, 409]
        with database.session() as session:
            assert len(session.scalars(select(Deal).where(Deal.demand_id == demand_id)).all()) == 1
            assert len(session.scalars(select(Order).where(Order.kind == "custom")).all()) == 3


# Real races (PostgreSQL): cancels, accepts, withdrawals and new quotes at the same moment -------

def _race(app, calls) -> list[int]:
    """Send each (path, body, key) from its own client at the same moment; their statuses."""
    def post(path, body, secret):
        client = app.test_client()
        return lambda: client.post(path, json=body, headers={
            "Authorization": f"Bearer {secret}"}).status_code

    return at_once([post(*call) for call in calls])


@only_on_postgresql
def test_racing_cancels_accepts_withdrawals_and_quotes_decide_once(database_url, tmp_path):
    with fresh_app(database_url, tmp_path) as app:
        database = app.extensions["market.db"]
        with database.session() as session, session.begin():
            buyer_org = make_org(session, "buyer")
            buyer = principal_of(buyer_org, "buyer")
            suppliers = [supplier_with_dataset(session, f"Racer {n}") for n in (1, 2)]
            buyer_keys = [make_key(session, buyer_org, scopes=("billing:write",))[1]
                          for _ in range(4)]
            supplier_keys = [make_key(session, session.get(Organization, who.organization_id),
                                      scopes=("catalog:write",))[1] for who, _ in suppliers]
            demands = [deals.post_demand(session, buyer, demand_values()) for _ in range(3)]
            quoted, lone = demands[0], demands[1]
            quote_ids = [deals.submit_quote(session, who, quoted, {
                "dataset_id": dataset.id, "milestones": milestones()}).id
                for who, dataset in suppliers]
            lone_quote_id = deals.submit_quote(session, suppliers[0][0], lone, {
                "dataset_id": suppliers[0][1].id, "milestones": milestones()}).id
            ids = [d.id for d in demands]
            datasets = [dataset.id for _, dataset in suppliers]

        # Two cancels and an accept of each quote: exactly one of the four decides.
        statuses = _race(app, [
            (f"/api/v1/demands/{ids[0]}/cancel", {"reason": "Stopped"}, buyer_keys[0]),
            (f"/api/v1/demands/{ids[0]}/cancel", {"reason": "Stopped"}, buyer_keys[1]),
            (f"/api/v1/quotes/{quote_ids[0]}/accept", {}, buyer_keys[2]),
            (f"/api/v1/quotes/{quote_ids[1]}/accept", {}, buyer_keys[3])])
        assert sorted(statuses) in ([200, 409, 409, 409], [201, 409, 409, 409]), statuses
        with database.session() as session:
            demand = session.get(Demand, ids[0])
            found = session.scalars(select(Deal).where(Deal.demand_id == demand.id)).all()
            if 200 in statuses:
                assert demand.status == "cancelled" and found == []
                assert [q.status for q in demand.quotes] == ["declined", "declined"]
            else:
                assert demand.status == "awarded" and len(found) == 1
                assert sorted(q.status for q in demand.quotes) == ["accepted", "declined"]
                assert len(deals.milestone_orders(session, found[0])) == 3

        # The supplier withdraws the quote the buyer accepts: one of them.
        statuses = _race(app, [
            (f"/api/v1/quotes/{lone_quote_id}/withdraw", {}, supplier_keys[0]),
            (f"/api/v1/quotes/{lone_quote_id}/accept", {}, buyer_keys[0])])
        assert statuses in ([200, 409], [409, 201]), statuses
        with database.session() as session:
            quote = session.get(DealQuote, lone_quote_id)
            deal = session.scalar(select(Deal).where(Deal.quote_id == quote.id))
            if statuses[0] == 200:
                assert (quote.status, quote.demand.status, deal) == ("withdrawn", "open", None)
            else:
                assert (quote.status, quote.demand.status) == ("accepted", "awarded")
                assert len(deals.milestone_orders(session, deal)) == 3

        # Quotes sent while the demand is cancelled: none is left awaiting a decision.
        statuses = _race(app, [
            (f"/api/v1/demands/{ids[2]}/cancel", {"reason": "Stopped"}, buyer_keys[0]),
            *((f"/api/v1/demands/{ids[2]}/quotes",
               {"dataset_id": datasets[n], "milestones": milestones()}, supplier_keys[n])
              for n in (0, 1))])
        assert statuses[0] == 200 and all(s in (201, 409) for s in statuses[1:]), statuses
        with database.session() as session:
            demand = session.get(Demand, ids[2])
            assert demand.status == "cancelled"
            assert [q.status for q in demand.quotes] == ["declined"] * statuses.count(201)
