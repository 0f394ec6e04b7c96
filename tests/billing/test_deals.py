"""Custom deals: demand → quotes → accepted quote → milestone orders → delivery checked against
the quality report → acceptance or dispute → final payment grants the data and a certificate."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from billing import deals, payments
from billing.context import BillingSettings
from billing.ledger import trial_balance, unbalanced_transactions
from billing.models import Certificate, Deal, Demand, Entitlement, Order
from market.accounts import services as accounts
from market.accounts.authz import Principal
from market.audit import AuditEntry
from market.catalog import importer
from market.catalog import services as catalog
from market.errors import Conflict, Forbidden, InvalidInput, NotFound
from pricing.money import Money
from tests.concurrency import fresh_app
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
    invoice = payments.issue_invoice(session, order, SETTINGS)
    payments.record_bank_receipt(session, market["finance"], invoice, amount=order.total,
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
    assert [d.id for d in deals.list_open_demands(session, first)] == [demand.id]
    assert deals.list_open_demands(session, buyer) == []  # not its own

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

    listed = supplier_client.get("/api/v1/demands?role=supplier").get_json()
    assert [d["id"] for d in listed] == [demand_id]
    assert buyer_client.get("/api/v1/demands?role=supplier").status_code == 403
    assert [d["id"] for d in buyer_client.get("/api/v1/demands").get_json()] == [demand_id]

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


# A real race (PostgreSQL): four accepts of one demand's two quotes at the same moment -----------

@pytest.mark.skipif(
    make_url(os.environ.get("TEST_DATABASE_URL") or "sqlite://").get_backend_name()
    != "postgresql",
    reason="concurrent transactions only mean something on PostgreSQL")
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
        barrier = threading.Barrier(4)
        statuses: list[int] = [0] * 4

        def accept(i):
            client = app.test_client()
            barrier.wait()
            statuses[i] = client.post(f"/api/v1/quotes/{quote_ids[i % 2]}/accept", json={},
                                      headers={"Authorization": f"Bearer {secrets[i]}"}
                                      ).status_code

        threads = [threading.Thread(target=accept, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [201, 409, 409, 409]
        with database.session() as session:
            assert len(session.scalars(select(Deal).where(Deal.demand_id == demand_id)).all()) == 1
            assert len(session.scalars(select(Order).where(Order.kind == "custom")).all()) == 3
