"""Royalty usage reports: each event's outcome, once per id forever, graduated tiers exact over
the month, late events in the open month, the credit line's limit; and the usage report."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import false, func, select

from billing.metering import usage
from billing.metering.charge import period_of
from billing.models import CreditLine, UsageEvent
from market.core.db import utcnow
from pricing.offers import offer_from_dict
from pricing.rating import Usage, rate
from tests.billing.shop import buyer, listed_dataset
from tests.factories import make_key, make_org

ROYALTY = {"kind": "royalty", "code": "royalty", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": 1_000_000,
     "price_per_million": {"amount": "30", "currency": "CNY"}},
    {"from_tokens": 1_000_000, "up_to": 5_000_000,
     "price_per_million": {"amount": "17", "currency": "CNY"}},
    {"from_tokens": 5_000_000, "up_to": None,
     "price_per_million": {"amount": "7.5", "currency": "CNY"}}]}


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, extra_offers=[ROYALTY])


@pytest.fixture()
def model_co(session, passwords):
    org, _, _ = buyer(session, passwords)
    session.flush()
    return org


def _key(session, org):
    key, secret = make_key(session, org, scopes=("usage:write", "usage:read"))
    session.commit()
    return key, {"Authorization": f"Bearer {secret}"}


def _credit(session, org, limit_minor=10_000_000):
    line = CreditLine(organization_id=org.id, currency="CNY", limit_minor=limit_minor)
    session.add(line)
    session.commit()
    return line


def _event(event_id, dataset_id, tokens, occurred_at=None, **more):
    occurred_at = occurred_at or utcnow() - dt.timedelta(minutes=1)
    return {"id": event_id, "dataset_id": dataset_id, "tokens": tokens,
            "occurred_at": occurred_at.isoformat(), **more}


def _report(client, headers, events):
    return client.post("/api/v1/usage/events", json={"events": events}, headers=headers)


def _minor(amount):
    return int(Decimal(amount["amount"]) * 100)


def _used(session, line):
    session.refresh(line)
    return line.used_minor


def test_each_event_has_its_outcome_and_only_valid_ones_are_charged(
        client, session, passwords, shop, model_co):
    line = _credit(session, model_co)
    _, headers = _key(session, model_co)
    # A listed dataset without a royalty price; and the catalogue's unknown id.
    plain = listed_dataset(session, passwords)["dataset"]
    session.commit()
    dataset = shop["dataset"].id
    response = _report(client, headers, [
        _event("a", dataset, 400_000, model="qwen-7b"),
        _event("b", dataset, 700_000),
        _event("a", dataset, 999),  # the same id again, in the same batch
        _event("future", dataset, 10, utcnow() + dt.timedelta(minutes=6)),
        _event("soon", dataset, 10, utcnow() + dt.timedelta(minutes=4)),  # clocks differ
        _event("negative", dataset, -5),
        _event("unknown", 987_654, 10),
        _event("no-price", plain.id, 10),
        _event("zero", dataset, 0),
    ])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    outcomes = {(r["id"], r["status"]): r for r in body["results"]}
    assert [(r["id"], r["status"]) for r in body["results"]] == [
        ("a", "accepted"), ("b", "accepted"), ("a", "duplicate"), ("future", "rejected"),
        ("soon", "accepted"), ("negative", "rejected"), ("unknown", "rejected"),
        ("no-price", "rejected"), ("zero", "accepted")]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (4, 1, 4)
    assert outcomes[("future", "rejected")]["error"]["field"] == "occurred_at"
    assert outcomes[("negative", "rejected")]["error"] == {
        "code": "invalid", "field": "tokens", "message": "Tokens cannot be negative."}
    assert outcomes[("unknown", "rejected")]["error"]["code"] == "not_found"
    assert outcomes[("no-price", "rejected")]["error"]["code"] == "no_royalty_price"
    assert outcomes[("a", "duplicate")]["amount"] == outcomes[("a", "accepted")]["amount"]
    assert outcomes[("a", "duplicate")]["tokens"] == 400_000
    # 1,100,010 tokens on the month: 1M at 30 and 100,010 at 17 per million.
    charged = [_minor(r["amount"]) for r in body["results"] if r["status"] == "accepted"]
    assert sum(charged) == 3_000 + 170 == _used(session, line)
    events = session.scalars(select(UsageEvent).order_by(UsageEvent.id)).all()
    assert [(e.kind, e.paid_by, e.tokens) for e in events] == [
        ("royalty", "postpaid", 400_000), ("royalty", "postpaid", 700_000),
        ("royalty", "postpaid", 10), ("royalty", "free", 0)]
    assert sum(e.amount_minor for e in events) == sum(charged)
    assert events[0].request_id == f"event:{model_co.id}:a"
    assert [e.model for e in events] == ["qwen-7b", None, None, None]
    assert all(e.supply_chain_revision_id is not None for e in events)

    # Across batches: the ids already accepted come back duplicate and charge nothing.
    again = _report(client, headers, [_event("a", dataset, 400_000), _event("b", dataset, 5),
                                      _event("c", dataset, 1_000), _event("negative", dataset, 5)])
    body = again.get_json()
    assert [r["status"] for r in body["results"]] == [
        "duplicate", "duplicate", "accepted", "accepted"]
    assert body["results"][1]["tokens"] == 700_000  # what was accepted, not what was resent
    assert _used(session, line) == sum(charged) + sum(
        _minor(r["amount"]) for r in body["results"] if r["status"] == "accepted")
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 6


def test_graduated_tiers_add_up_to_the_rating_of_the_months_total(
        client, session, shop, model_co):
    line = _credit(session, model_co)
    _, headers = _key(session, model_co)
    dataset = shop["dataset"].id
    sizes = [333_333, 1, 777_777, 12_345, 2_999_999, 1_234_567, 7, 2_000_001, 99_999]
    for start in range(0, len(sizes), 3):
        batch = [_event(f"t{start + i}", dataset, tokens)
                 for i, tokens in enumerate(sizes[start:start + 3])]
        assert _report(client, headers, batch).get_json()["accepted"] == len(batch)
    card = offer_from_dict(ROYALTY)
    expected = rate(Usage(sum(sizes)), card).total.minor
    amounts = session.scalars(select(UsageEvent.amount_minor)).all()
    assert len(amounts) == len(sizes) and sum(amounts) == expected == _used(session, line)


def test_an_event_from_last_month_is_charged_in_the_current_period(
        client, session, shop, model_co):
    _credit(session, model_co)
    _, headers = _key(session, model_co)
    late = utcnow() - dt.timedelta(days=40)
    response = _report(client, headers, [_event("late", shop["dataset"].id, 5_000, late)])
    assert response.get_json()["accepted"] == 1
    event = session.scalar(select(UsageEvent))
    assert event.period == period_of(session, utcnow()) != period_of(session, late)
    assert event.occurred_at == late


@pytest.mark.parametrize("body", [
    {"events": [{"id": str(n), "dataset_id": 1, "tokens": 1,
                 "occurred_at": "2026-01-01T00:00:00Z"} for n in range(1_001)]},
    {"events": []},
    {"events": {"id": "x"}},
    {"events": [{"id": "x", "dataset_id": 1, "tokens": 1,
                 "occurred_at": "2026-01-01T00:00:00Z"}], "more": 1},
    [{"id": "x", "dataset_id": 1, "tokens": 1, "occurred_at": "2026-01-01T00:00:00Z"}],
])
def test_a_batch_of_the_wrong_shape_is_422_and_writes_nothing(client, session, shop, model_co,
                                                             body):
    _credit(session, model_co)
    _, headers = _key(session, model_co)
    response = client.post("/api/v1/usage/events", json=body, headers=headers)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert set(response.get_json()["errors"]) & {"events", "more", "_schema"}
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_an_invalid_event_gets_its_own_outcome_and_the_valid_ones_are_charged(
        client, session, shop, model_co):
    line = _credit(session, model_co)
    _, headers = _key(session, model_co)
    dataset = shop["dataset"].id
    good = _event("good", dataset, 10_000)
    bad = [
        (dict(good, id="feb30", occurred_at="2026-02-30T00:00:00Z"), "occurred_at"),
        (dict(good, id="half", tokens=1.5), "tokens"),
        (dict(good, id=""), "id"),
        (dict(good, id="big-dataset", dataset_id=2**40), "dataset_id"),
        (dict(good, id="big-tokens", tokens=2**63), "tokens"),
        (dict(good, id="string-tokens", tokens="5"), "tokens"),
        (dict(good, id="nul", model="a\u0000b"), "model"),
        (dict(good, id="no-time", occurred_at=None), "occurred_at"),
        (dict(good, id="year-one", occurred_at="0001-01-01T00:00:00+05:00"), "occurred_at"),
        ({k: v for k, v in good.items() if k != "tokens"} | {"id": "missing"}, "tokens"),
        (dict(good, id="extra", colour="red"), "colour"),
        ("not an object", "_schema"),
        (None, "_schema"),
    ]
    response = _report(client, headers, [good] + [event for event, _ in bad]
                       + [_event("also-good", dataset, 5_000)])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, len(bad))
    results = body["results"]
    assert [r["status"] for r in results] == ["accepted"] + ["rejected"] * len(bad) + [
        "accepted"]
    for result, (event, field) in zip(results[1:], bad):
        assert result["error"]["code"] == "invalid", result
        assert result["error"]["field"] == field, result
        assert field in result["error"]["errors"], result
        assert result["id"] == (event.get("id") if isinstance(event, dict) else None)
    # Only the two valid events were charged and recorded.
    recorded = session.scalars(select(UsageEvent.request_id).order_by(UsageEvent.id)).all()
    assert recorded == [f"event:{model_co.id}:good", f"event:{model_co.id}:also-good"]
    assert _used(session, line) == sum(_minor(r["amount"]) for r in results
                                       if r["status"] == "accepted") > 0
    # An invalid event's id is not taken: sent again, well formed, it is accepted.
    again = _report(client, headers, [_event("half", dataset, 1)]).get_json()
    assert again["results"][0]["status"] == "accepted"


def test_an_event_too_large_to_price_is_rejected_alone(client, session, shop, model_co):
    _credit(session, model_co)
    _, headers = _key(session, model_co)
    dataset = shop["dataset"].id
    body = _report(client, headers, [
        _event("fine", dataset, 1_000), _event("huge", dataset, 2**62),
        _event("largest", dataset, 2**63 - 1)]).get_json()
    assert [(r["status"], (r.get("error") or {}).get("code")) for r in body["results"]] == [
        ("accepted", None), ("rejected", "invalid"), ("rejected", "invalid")]
    assert body["results"][1]["error"]["field"] == "tokens"


def test_without_a_credit_line_events_are_refused_payment_required(
        client, session, shop, model_co):
    _, headers = _key(session, model_co)
    body = _report(client, headers, [_event("a", shop["dataset"].id, 1_000),
                                     _event("z", shop["dataset"].id, 0)]).get_json()
    assert [(r["status"], (r.get("error") or {}).get("code")) for r in body["results"]] == [
        ("rejected", "payment_required"), ("accepted", None)]
    # The refused id was never accepted: it can be sent again once there is a credit line.
    _credit(session, model_co)
    assert _report(client, headers, [_event("a", shop["dataset"].id, 1_000)]
                   ).get_json()["accepted"] == 1


def test_the_credit_limit_is_never_passed_the_events_that_fit_are_charged(
        client, session, shop, model_co):
    line = _credit(session, model_co, limit_minor=100)  # CNY 1.00: 33,333 tokens at 30/M
    _, headers = _key(session, model_co)
    dataset = shop["dataset"].id
    body = _report(client, headers, [_event(f"e{n}", dataset, 10_000) for n in range(5)]
                   ).get_json()
    assert [r["status"] for r in body["results"]] == ["accepted"] * 3 + ["rejected"] * 2
    assert body["results"][3]["error"]["code"] == "payment_required"
    charged = sum(_minor(r["amount"]) for r in body["results"] if r["status"] == "accepted")
    assert charged == 90 == _used(session, line)
    assert sum(session.scalars(select(UsageEvent.amount_minor))) == 90


def test_an_id_taken_between_the_look_up_and_the_write_is_409_and_charges_nothing(
        client, session, shop, model_co, monkeypatch):
    line = _credit(session, model_co)
    _, headers = _key(session, model_co)
    dataset = shop["dataset"].id
    assert _report(client, headers, [_event("a", dataset, 1_000)]).status_code == 200
    used = _used(session, line)
    # As if another request recorded "a" just after this one looked its ids up.
    monkeypatch.setattr(usage, "_one_of", lambda session, column, values: false())
    response = _report(client, headers, [_event("b", dataset, 2_000), _event("a", dataset, 1)])
    assert response.status_code == 409 and "events" in response.get_json()["errors"]
    assert _used(session, line) == used
    assert session.scalars(select(UsageEvent.request_id)).all() == [f"event:{model_co.id}:a"]


def _usage(client, headers, **query):
    return client.get("/api/v1/usage", headers=headers, query_string=query)


def test_the_usage_report_groups_by_day_dataset_and_key(client, session, passwords, shop,
                                                        model_co):
    key, headers = _key(session, model_co)
    other_key, _ = _key(session, model_co)
    stranger = make_org(session, "buyer", name="Someone Else")
    dataset = shop["dataset"].id
    # 23:30 on 10 March in Beijing, the business time zone (15:30 UTC).
    day = dt.datetime(2026, 3, 10, 15, 30, tzinfo=dt.timezone.utc)

    def event(n, org, api_key, at, tokens, amount, kind="data", paid_by="postpaid"):
        session.add(UsageEvent(
            request_id=f"test:{n}", organization_id=org.id, api_key_id=api_key, kind=kind,
            dataset_id=dataset, tokens=tokens, unit_price="0", amount_minor=amount,
            currency="CNY", paid_by=paid_by, period=period_of(session, at), occurred_at=at,
            recorded_at=at))

    event(1, model_co, key.id, day, 100, 3)
    event(2, model_co, key.id, day + dt.timedelta(minutes=45), 200, 6)  # the next Beijing day
    event(3, model_co, other_key.id, day + dt.timedelta(hours=1), 50, 0, paid_by="wallet")
    event(4, model_co, None, day, 1_000, 30, kind="royalty")
    event(5, model_co, key.id, day + dt.timedelta(days=40), 7, 1)  # outside the range
    event(6, stranger, None, day, 9_999, 999)
    session.commit()
    window = {"from": "2026-03-01", "to": "2026-03-31"}

    body = _usage(client, headers, group_by="day", **window).get_json()
    assert [(r["day"], r["tokens"], r["amount"]["amount"], r["calls"]) for r in body["rows"]] == [
        ("2026-03-10", 1_100, "0.33", 2), ("2026-03-11", 250, "0.06", 2)]
    assert [(t["tokens"], t["amount"], t["calls"]) for t in body["totals"]] == [
        (1_350, {"amount": "0.39", "currency": "CNY"}, 4)]
    assert {r["kind"]: (r["tokens"], r["calls"]) for r in body["by_kind"]} == {
        "data": (350, 3), "royalty": (1_000, 1)}
    assert {r["paid_by"]: r["tokens"] for r in body["by_paid_by"]} == {
        "postpaid": 1_300, "wallet": 50}
    assert (body["from"], body["to"], body["group_by"]) == ("2026-03-01", "2026-03-31", "day")

    body = _usage(client, headers, group_by="dataset", **window).get_json()
    assert [(r["dataset_id"], r["dataset_title"], r["tokens"], r["calls"])
            for r in body["rows"]] == [(dataset, "Grid load series", 1_350, 4)]

    body = _usage(client, headers, group_by="key", **window).get_json()
    assert [(r["api_key_id"], r["key_prefix"], r["tokens"], r["amount"]["amount"])
            for r in body["rows"]] == [(key.id, key.prefix, 300, "0.09"),
                                       (other_key.id, other_key.prefix, 50, "0.00"),
                                       (None, None, 1_000, "0.30")]

    # Another organization sees only its own (here: nothing of these).
    _, theirs = _key(session, stranger)
    body = _usage(client, theirs, group_by="key", **window).get_json()
    assert [r["tokens"] for r in body["rows"]] == [9_999]


def test_the_usage_report_defaults_to_this_month_and_refuses_bad_ranges(
        client, session, model_co):
    _, headers = _key(session, model_co)
    body = _usage(client, headers).get_json()
    today = utcnow().date()
    assert body["from"] == today.replace(day=1).isoformat() and body["to"] >= today.isoformat()
    assert body["rows"] == [] and body["group_by"] == "day"
    for query in ({"from": "2026-03-02", "to": "2026-03-01"},
                  {"from": "2025-01-01", "to": "2026-01-02"}):
        response = _usage(client, headers, **query)
        assert response.status_code == 422 and "to" in response.get_json()["errors"]
    assert "group_by" in _usage(client, headers, group_by="month").get_json()["errors"]
