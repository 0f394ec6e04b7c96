"""Arbitrary sequences of money operations over the real services and database keep the books
sound: orders with random supply chains, bank transfers paid exactly, in parts or too much, card
payments settled by (re-delivered, stale) webhooks, partial, full and excessive refunds. After
every step: each ledger transaction balances, the accounts sum to zero, no participant is owed a
negative amount, the platform's clearing account holds exactly the money that came in less what
went back, refunds stay within payments, and each payment's split adds up to its amount.

Each example runs inside a savepoint of the test's transaction, rolled back at its end.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as note_case
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test,
)
from sqlalchemy import func, select

from billing import invoices, orders
from billing.payments import bank_transfer, card as payments, refunds
from billing.settlement import ledger
from billing.payments.gateway import IntentResult, RefundResult
from billing.settlement.ledger import LedgerAccount, LedgerEntry, Purpose
from billing.models import BankReceipt, Invoice, Order, Payment, Refund
from billing.payments.webhooks import handle_event
from market.catalog import services as catalog
from market.catalog.models import Dataset
from market.core.errors import InvalidInput
from pricing.money import Money
from tests.billing.payments.fake_gateway import FakeGateway
from tests.billing.shop import buyer, listed_dataset, platform_finance

PRICES = ("9800.00", "0.01", "333.33", "1250.50")
STATUSES = ("created", "processing", "requires_action", "failed", "canceled", "succeeded")


class Processor(FakeGateway):
    """A card processor that answers as an asynchronous one does: a payment is ``processing``
    until its webhook says how it ended; a refund is accepted, or refused (``refuse_refunds``)."""

    name = "stripe"

    def __init__(self) -> None:
        super().__init__()
        self.refuse_refunds = False
        self._ids = itertools.count(1)

    def create_payment_intent(self, *, idempotency_key, payment_method_ref, **_) -> IntentResult:
        return IntentResult(ref=f"pi_{idempotency_key}", status="processing",
                            client_secret=None, failure_code=None, failure_message=None,
                            payment_method_ref=payment_method_ref)

    def refund(self, *, payment_ref, amount_minor, idempotency_key, metadata) -> RefundResult:
        return RefundResult(ref=f"re_{next(self._ids)}_{idempotency_key}",
                            status="failed" if self.refuse_refunds else "succeeded")


@st.composite
def supply_chains(draw):
    """1–3 of (supplier, processor, exchange), the supplier always, bps summing to 10,000."""
    roles = ["supplier"] + draw(st.sampled_from([[], ["processor"], ["exchange"],
                                                 ["processor", "exchange"]]))
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=len(roles) - 1,
                                max_size=len(roles) - 1)))
    bounds = [0, *cuts, 10_000]
    return [(role, high - low) for role, low, high in zip(roles, bounds, bounds[1:])]


class MoneyMachine(RuleBasedStateMachine):
    """Set ``world`` (what the test built) before running it."""

    world: dict = {}

    def __init__(self) -> None:
        super().__init__()
        self.savepoint = self.world["connection"].begin_nested()
        self.db = self.world["db"]
        self.settings = self.world["settings"]
        self.processor = Processor()
        self.order_ids: list[int] = []
        self.events: list[dict] = []
        self.references = itertools.count(1)

    def teardown(self) -> None:
        self.savepoint.rollback()

    # -- what there is ------------------------------------------------------------------------

    def _orders(self, session, *statuses: str) -> list[Order]:
        found = session.scalars(select(Order).where(Order.id.in_(self.order_ids))
                                .order_by(Order.id)).all()
        return [o for o in found if not statuses or o.status in statuses]

    def _unpaid(self, session) -> list[Order]:
        return [o for o in self._orders(session, "awaiting_payment")
                if not any(p.status in ("created", "processing", "requires_action")
                           for p in o.payments)]

    def _payments(self, session, *statuses: str) -> list[Payment]:
        found = session.scalars(select(Payment).where(Payment.order_id.in_(self.order_ids))
                                .order_by(Payment.id)).all()
        return [p for p in found if not statuses or p.status in statuses]

    def _bank_candidates(self, session) -> list[int]:
        """Orders money can arrive for: unpaid ones, and any whose invoice is still open (also
        when the order was meanwhile paid by card: the transfer arrives anyway)."""
        candidates = {o.id for o in self._unpaid(session)}
        candidates |= {o.id for o in self._orders(session) if o.invoice is not None
                       and o.invoice.status in ("open", "partially_paid")}
        return sorted(candidates)

    def _can(self, find) -> bool:
        with self.db.session() as session:
            return bool(find(session))

    def _snapshot(self) -> tuple:
        """Everything money-bearing, to show that a refused or stale operation changed nothing."""
        with self.db.session() as session:
            entries = session.scalar(select(func.count()).select_from(LedgerEntry))
            rows = [(p.id, p.status, p.refunded_minor, p.applied, dict(p.split))
                    for p in self._payments(session)]
            order_rows = [(o.id, o.status, o.paid_minor, o.refunded_minor)
                          for o in self._orders(session)]
            refund_rows = session.scalars(select(Refund.status).order_by(Refund.id)).all()
        return entries, rows, order_rows, refund_rows

    # -- rules --------------------------------------------------------------------------------

    @rule(price=st.sampled_from(PRICES), quantity=st.integers(1, 3), chain=supply_chains())
    def place_order(self, price, quantity, chain):
        world = self.world
        with self.db.session() as session, session.begin():
            offer_id = world["offers"][price]
            catalog.set_supply_chain(session, world["owner"],
                                     session.get(Dataset, world["dataset_id"]),
                                     [{"organization_id": world["chain_orgs"][role], "role": role,
                                       "share_bps": bps} for role, bps in chain])
            order = orders.place_mall_order(session, world["buyer"],
                                            [orders.CartItem(offer_id, quantity)],
                                            payment_method="bank_transfer")
            assert order.lines[0].shares == [[f"{role}:{world['chain_orgs'][role]}", bps]
                                             for role, bps in chain]
            self.order_ids.append(order.id)

    def _receive(self, invoice_id: int, minor: int) -> None:
        with self.db.session() as session, session.begin():
            invoice = session.get(Invoice, invoice_id)
            bank_transfer.record_bank_receipt(
                session, self.world["finance"], invoice, amount=Money.from_minor(minor, "CNY"),
                received_on=dt.date.today(), bank_reference=f"BANK-{next(self.references)}",
                settings=self.settings)

    @precondition(lambda self: self._can(self._bank_candidates))
    @rule(data=st.data(), how=st.sampled_from(["exact", "two parts", "too much", "part only"]))
    def pay_by_bank_transfer(self, data, how):
        """Money received against an invoice, issued now if the order has none."""
        with self.db.session() as session, session.begin():
            order = session.get(Order, data.draw(st.sampled_from(self._bank_candidates(session))))
            invoice = order.invoice or invoices.issue_invoice(session, order, self.settings)
            invoice_id, outstanding = invoice.id, invoice.outstanding_minor
        if how in ("two parts", "part only") and outstanding > 1:
            first = data.draw(st.integers(1, outstanding - 1), label="first part")
            self._receive(invoice_id, first)
            outstanding -= first
            if how == "part only":
                note_case("bank transfer: part only")
                return
        extra = data.draw(st.integers(1, 50_000), label="extra") if how == "too much" else 0
        self._receive(invoice_id, outstanding + extra)
        note_case(f"bank transfer: {how}")

    @precondition(lambda self: self._can(self._unpaid))
    @rule(data=st.data(), outcome=st.sampled_from(["succeeded", "payment_failed"]))
    def pay_by_card(self, data, outcome):
        """A card payment left ``processing``, settled by its webhook, which is then delivered
        again (a duplicate) and followed by a stale event: neither changes anything."""
        with self.db.session() as session:
            order_id = data.draw(st.sampled_from([o.id for o in self._unpaid(session)]))
        payment = payments.pay_by_card(self.db, self.processor, self.settings, order_id,
                                       principal=self.world["buyer"],
                                       payment_method_ref="pm_card_visa")
        assert payment.status == "processing"
        event = self._intent_event(payment, outcome)
        with self.db.session() as session, session.begin():
            handle_event(session, event, self.settings)
        before = self._snapshot()
        with self.db.session() as session, session.begin():
            assert handle_event(session, event, self.settings) == "duplicate"
        stale = self._intent_event(payment, data.draw(st.sampled_from(
            ["processing", "requires_action", "payment_failed", "succeeded"]), label="stale"))
        with self.db.session() as session, session.begin():
            handle_event(session, stale, self.settings)
        note_case(f"card payment: {outcome}")
        if outcome == "succeeded":
            # Anything after success is stale (a repeated success included).
            assert self._snapshot() == before

    def _intent_event(self, payment: Payment, outcome: str) -> dict:
        event = {"id": f"evt_{len(self.events) + 1}_{payment.id}",
                 "type": f"payment_intent.{outcome}",
                 "data": {"object": {"id": payment.gateway_ref,
                                     "metadata": {"payment_id": str(payment.id)},
                                     "last_payment_error": {"code": "card_declined"}
                                     if outcome == "payment_failed" else None}}}
        self.events.append(event)
        return event

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def redeliver_webhook(self, data):
        event = data.draw(st.sampled_from(self.events))
        before = self._snapshot()
        with self.db.session() as session, session.begin():
            assert handle_event(session, event, self.settings) == "duplicate"
        assert self._snapshot() == before

    @precondition(lambda self: self._can(lambda s: self._payments(s, "succeeded")))
    @rule(data=st.data(), status=st.sampled_from(STATUSES))
    def stale_outcome(self, data, status):
        """An outcome arriving for a payment that already succeeded changes nothing."""
        with self.db.session() as session:
            payment_id = data.draw(st.sampled_from(
                [p.id for p in self._payments(session, "succeeded")]))
        before = self._snapshot()
        with self.db.session() as session, session.begin():
            payment = session.get(Payment, payment_id)
            assert payments.apply_intent_status(session, payment, status, self.settings) is False
        assert self._snapshot() == before

    @precondition(lambda self: self._can(lambda s: self._payments(s, "succeeded")))
    @rule(data=st.data(), how=st.sampled_from(["part", "rest", "too much", "refused"]))
    def refund(self, data, how):
        with self.db.session() as session:
            paid = [(p.id, p.amount_minor - p.refunded_minor, p.method)
                    for p in self._payments(session, "succeeded")]
        if how != "too much":
            paid = [p for p in paid if p[1] > 0]
        if how == "refused":
            paid = [p for p in paid if p[2] == "card"]
        if not paid:
            return
        payment_id, remaining, method = data.draw(st.sampled_from(paid))
        match how:
            case "part" if remaining > 1:
                minor = data.draw(st.integers(1, remaining - 1), label="part")
            case "too much":
                minor = remaining + data.draw(st.integers(1, 10_000), label="over")
            case _:
                minor = remaining
        before = self._snapshot()
        self.processor.refuse_refunds = how == "refused"
        note_case(f"refund of a {method} payment: {how}")

        def attempt():
            return refunds.refund_payment(
                self.db, self.processor, self.world["finance"], payment_id,
                amount=Money.from_minor(minor, "CNY"), reason=how,
                bank_reference=f"OUT-{next(self.references)}" if method == "bank_transfer"
                else None)

        if how == "too much":
            with pytest.raises(InvalidInput):
                attempt()
            assert self._snapshot() == before
            return
        refund = attempt()
        assert refund.status == ("failed" if how == "refused" else "succeeded")
        if how == "refused":
            entries, payment_rows, order_rows, refund_rows = self._snapshot()
            assert (entries, payment_rows, order_rows) == before[:3]

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def books_are_sound(self):
        with self.db.session() as session:
            assert ledger.unbalanced_transactions(session) == []
            assert all(total == 0 for total in ledger.trial_balance(session).values())
            balances = dict(session.execute(
                select(LedgerEntry.account_id, func.sum(LedgerEntry.amount_minor))
                .group_by(LedgerEntry.account_id)).all())
            for account in session.scalars(select(LedgerAccount)):
                held = int(balances.get(account.id, 0))
                if account.purpose in (Purpose.PARTICIPANT_PAYABLE.value,
                                       Purpose.BUYER_PREPAID.value):
                    # Credit accounts: we owe the participant / hold the buyer's money, never
                    # the other way round.
                    assert held <= 0, (account.label, held)
            # The clearing account is the money the platform holds: what came in by bank and
            # by card, less what went back.
            received = session.scalar(select(func.coalesce(func.sum(BankReceipt.amount_minor),
                                                           0)))
            by_card = session.scalar(select(func.coalesce(func.sum(Payment.amount_minor), 0))
                                     .where(Payment.method == "card",
                                            Payment.status == "succeeded"))
            returned = session.scalar(select(func.coalesce(func.sum(Refund.amount_minor), 0))
                                      .where(Refund.status == "succeeded"))
            clearing = ledger.get_account(session, Purpose.PLATFORM_CLEARING, "CNY")
            assert balances.get(clearing.id, 0) == received + by_card - returned

    @invariant()
    def refunds_stay_within_payments(self):
        with self.db.session() as session:
            for payment in self._payments(session):
                done = sum(r.amount_minor for r in payment.refunds if r.status == "succeeded")
                assert not [r for r in payment.refunds if r.status == "pending"]
                assert done == payment.refunded_minor <= payment.amount_minor
                if payment.status == "succeeded":
                    split = sum(Money(v, payment.currency).minor for v in payment.split.values())
                    assert split == payment.amount_minor, payment.split
            for order in self._orders(session):
                applied = [p for p in order.payments if p.applied]
                assert order.refunded_minor <= order.paid_minor
                assert len(applied) == (0 if order.status == "awaiting_payment" else 1)
                assert order.refunded_minor == sum(p.refunded_minor for p in applied)
                if applied:
                    assert order.paid_minor == applied[0].amount_minor == order.total_minor


@pytest.fixture()
def world(app, connection, session, passwords):
    """A listed dataset with a package at each price, a buyer, platform finance."""
    made = listed_dataset(session, passwords, package_price=PRICES[0],
                          extra_offers=[{"kind": "mall_package", "code": f"p{i}",
                                         "price": {"amount": price, "currency": "CNY"}}
                                        for i, price in enumerate(PRICES[1:])])
    _, _, buyer_principal = buyer(session, passwords)
    _, _, finance_principal = platform_finance(session, passwords)
    session.commit()
    return {
        "connection": connection, "db": app.extensions["market.db"],
        "settings": app.extensions["market.billing"], "owner": made["owner"],
        "dataset_id": made["dataset"].id, "buyer": buyer_principal, "finance": finance_principal,
        "offers": {offer.terms["price"]["amount"]: offer.id
                   for offer in [made["package"], *made["offers"]]},
        "chain_orgs": {"supplier": made["supplier"].id, "processor": made["processor"].id,
                       "exchange": made["exchange"].id},
    }


def test_money_stays_sound_under_any_sequence_of_operations(world):
    MoneyMachine.world = world
    run_state_machine_as_test(MoneyMachine, settings=settings(
        max_examples=40, stateful_step_count=25, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))


def test_a_transfer_arriving_after_a_card_paid_the_order_is_credited_once(world):
    """The sequence the machine first found: part of a transfer, the order paid by card, the
    rest of the transfer. The transfer is the buyer's credit, once (it was counted twice)."""
    MoneyMachine.world = world
    machine = MoneyMachine()
    db, settings_ = world["db"], world["settings"]
    try:
        machine.place_order(price=PRICES[0], quantity=1, chain=[("supplier", 10_000)])
        with db.session() as session, session.begin():
            order = session.get(Order, machine.order_ids[0])
            invoice_id = invoices.issue_invoice(session, order, settings_).id
            total = order.total_minor
        machine._receive(invoice_id, 100)
        card = payments.pay_by_card(db, machine.processor, settings_, order.id,
                                    principal=world["buyer"], payment_method_ref="pm_card_visa")
        with db.session() as session, session.begin():
            handle_event(session, machine._intent_event(card, "succeeded"), settings_)
        machine._receive(invoice_id, total - 100)

        machine.books_are_sound()
        machine.refunds_stay_within_payments()
        with db.session() as session:
            prepaid = ledger.get_account(session, Purpose.BUYER_PREPAID, "CNY",
                                         world["buyer"].organization_id)
            assert ledger.balance(session, prepaid).minor == -total
            transfer = session.scalar(select(Payment).where(Payment.order_id == order.id,
                                                            Payment.method == "bank_transfer"))
            assert transfer.status == "succeeded" and not transfer.applied
        # Paying the credit back by bank leaves the buyer with nothing, and the books sound.
        refunds.refund_payment(db, None, world["finance"], transfer.id, bank_reference="OUT-1")
        machine.books_are_sound()
        with db.session() as session:
            assert ledger.balance(session, prepaid).minor == 0
    finally:
        machine.teardown()
