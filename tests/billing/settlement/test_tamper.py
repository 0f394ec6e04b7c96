"""Tampering behind the application: raw SQL on the tables, then the verifiers, naming what broke.

A month is built through the real services (a package paid by bank transfer, split across tax,
the platform and two participants; a second one partly refunded; the buyer's token wallet
granted), its statements closed and a checkpoint signed, as the close job does. Then each case
edits the tables directly, as someone with database access would:

1. a balanced move between platform revenue and tax inside a payment (and the same move
   re-sealed by whoever made it);
2. a lone unbalanced posting;
3. the last audit entries deleted;
4. an audit entry rewritten and the chain re-hashed after it;
5. a whole (balanced) ledger transaction deleted;
6. a token wallet's stored balance raised;
7. a statement rewritten with its hash recomputed, and a checkpoint forged to cover a change.

A clean month passes every verifier, and the standalone verifier agrees from the exported files.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from billing.context import BillingSettings
from billing.jobs import JOBS_BY_NAME
from billing.payments import refunds
from billing.settlement import checkpoints, compute, exports, workflow
from billing.settlement.ledger import LedgerAccount, LedgerEntry, LedgerTransaction, Purpose, seal_of
from billing.settlement.ledger_verify import verify_ledger
from billing.models import Payment, SettlementStatement, TokenWallet
from billing.orders import CartItem, place_mall_order
from billing.payments.bank_transfer import record_bank_receipt
from billing.invoices import issue_invoice
from billing.runs import run_job
from market.core import audit
from market.core.audit import AuditEntry
from market.core.db import utcnow
from pricing.money import Money
from tests.billing.conftest import billing_settings
from tests.billing.shop import buyer, listed_dataset, platform_finance

SETTINGS = BillingSettings()  # STATEMENT_REVIEW_DAYS and the rest at their defaults

ROOT = Path(__file__).resolve().parents[3]
PERIOD = f"{utcnow().replace(day=1) - dt.timedelta(days=1):%Y-%m}"


def _pay_by_bank(session, finance, order, settings, reference):
    invoice = issue_invoice(session, order, settings)
    record_bank_receipt(session, finance, invoice, amount=order.total,
                        received_on=utcnow().date(), bank_reference=reference,
                        settings=settings)


@pytest.fixture()
def month(app, session, passwords):
    settings = billing_settings()
    shop = listed_dataset(session, passwords, package_tokens=50_000)
    org, _, shopper = buyer(session, passwords)
    _, _, finance = platform_finance(session, passwords)
    orders = []
    for n in (1, 2):
        order = place_mall_order(session, shopper, [CartItem(shop["package"].id)],
                                 payment_method="bank_transfer")
        _pay_by_bank(session, finance, order, settings, f"B-{n}")
        orders.append(order)
    refund = refunds.reserve_refund(session, finance, orders[1].payments[0].id,
                                    Money("1000.00", "CNY"), "partial refund")
    refunds.complete_refund(session, refund.id, gateway_ref="bank:OUT-1")
    made = workflow.close_period(session, PERIOD, actor=None, settings=SETTINGS, cutoff=utcnow())
    key = checkpoints.signing_key_from_settings(app.config)
    checkpoint = checkpoints.sign_checkpoint(
        session, key, reason=f"close {PERIOD}",
        statements={s.number: s.content_hash for s in made})
    session.commit()
    payment = session.scalar(select(Payment).where(Payment.order_id == orders[0].id))
    return SimpleNamespace(shop=shop, buyer=org, orders=orders, payment=payment, key=key,
                           statements=made, checkpoint=checkpoint, refund=refund)


def _run(runner, *args):
    return runner.invoke(args=list(args))


def _entry(session, transaction_id, purpose):
    return session.execute(
        select(LedgerEntry.id, LedgerEntry.amount_minor).join(LedgerAccount)
        .where(LedgerEntry.transaction_id == transaction_id,
               LedgerAccount.purpose == purpose)).one()


def _payment_transaction(session, month):
    return session.scalar(select(LedgerTransaction).where(
        LedgerTransaction.kind == "payment",
        LedgerTransaction.reference_id == str(month.payment.id)))


def _reseal(session, transaction_id):
    """What a careful forger does after editing entries: recompute the stored seal."""
    session.expire_all()
    transaction = session.get(LedgerTransaction, transaction_id)
    seal = seal_of(kind=transaction.kind, idempotency_key=transaction.idempotency_key,
                   reference_type=transaction.reference_type,
                   reference_id=transaction.reference_id, memo=transaction.memo,
                   occurred_at=transaction.occurred_at,
                   entries=[(e.account_id, e.account.purpose, e.account.organization_id,
                             e.account.currency, e.amount_minor, e.currency)
                            for e in transaction.entries])
    session.execute(text("UPDATE ledger_transactions SET seal = :seal WHERE id = :id"),
                    {"seal": seal, "id": transaction_id})


def test_a_clean_month_passes_every_verifier(runner, session, month, tmp_path):
    assert verify_ledger(session) == []
    result = _run(runner, "billing", "verify-ledger")
    assert result.exit_code == 0, result.output
    assert "ledger sound" in result.output
    result = _run(runner, "audit", "verify", "--checkpoints")
    assert result.exit_code == 0, result.output
    assert "1 signed checkpoints verified" in result.output
    result = _run(runner, "billing", "verify-statements")
    assert result.exit_code == 0, result.output
    # A third party with the exported files and the public key agrees.
    assert _run(runner, "audit", "export", str(tmp_path)).exit_code == 0
    outcome = _third_party(tmp_path)
    assert outcome.returncode == 0, outcome.stderr
    assert "1 checkpoints verified" in outcome.stdout


def _third_party(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "verify_checkpoint.py"), "--public-key",
         str(directory / "platform-key.pem"), str(directory / "checkpoints.jsonl"),
         "--audit", str(directory / "audit.jsonl"), *extra],
        capture_output=True, text=True, timeout=60)


# 1. A balanced move between platform revenue and tax ------------------------------------------

def _move_revenue_to_tax(session, month, minor=10_000):
    transaction = _payment_transaction(session, month)
    revenue = _entry(session, transaction.id, Purpose.PLATFORM_REVENUE.value)
    tax = _entry(session, transaction.id, Purpose.TAX_PAYABLE.value)
    # Both credits (negative): the platform keeps 100.00 less and the tax authority is owed
    # 100.00 more; the transaction and the trial balance still sum to zero.
    session.execute(text("UPDATE ledger_entries SET amount_minor = amount_minor + :m "
                         "WHERE id = :id"), {"m": minor, "id": revenue.id})
    session.execute(text("UPDATE ledger_entries SET amount_minor = amount_minor - :m "
                         "WHERE id = :id"), {"m": minor, "id": tax.id})
    return transaction, tax


def test_a_balanced_move_between_revenue_and_tax_breaks_the_seal(runner, session, month):
    transaction, _ = _move_revenue_to_tax(session, month)
    session.commit()
    result = _run(runner, "billing", "verify-ledger")
    assert result.exit_code == 1
    assert (f"first failure: ledger transaction {transaction.id} (payment "
            f"payment:{month.payment.id}): it no longer matches its seal") in result.output
    assert "does not balance" not in result.output and "trial balance" not in result.output
    # What the payment's split recorded tells which accounts the move took from and gave to.
    revenue, tax = (Money(month.payment.split[key], "CNY") for key in ("platform", "tax"))
    moved = Money("100.00", "CNY")
    assert (f"platform_revenue (platform) is credited {(revenue - moved).amount} CNY, but "
            f"payment {month.payment.id} records {revenue.amount} CNY for it; "
            f"tax_payable (platform) is credited {(tax + moved).amount} CNY, but payment "
            f"{month.payment.id} records {tax.amount} CNY for it") in result.output


def test_the_same_move_re_sealed_still_disagrees_with_its_payment_and_the_checkpoint(
        runner, session, month):
    transaction, _ = _move_revenue_to_tax(session, month)
    _reseal(session, transaction.id)
    session.commit()
    findings = verify_ledger(session)
    assert [str(f) for f in findings][0].startswith(
        f"ledger transaction {transaction.id} (payment payment:{month.payment.id}): "
        "platform_revenue (platform) is credited")
    assert not any("seal" in f.problem for f in findings)
    result = _run(runner, "audit", "verify", "--checkpoints")
    assert result.exit_code == 1
    assert "ledger transactions id 1.." in result.output
    assert "do not match checkpoint #1" in result.output
    assert "as many transactions as it signed" in result.output


# 2. A lone unbalanced posting ------------------------------------------------------------------

def test_a_lone_unbalanced_posting_is_named(runner, session, month):
    transaction = _payment_transaction(session, month)
    revenue = session.scalar(select(LedgerAccount).where(
        LedgerAccount.purpose == Purpose.PLATFORM_REVENUE.value))
    session.execute(text("INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, "
                         "currency) VALUES (:t, :a, -12345, 'CNY')"),
                    {"t": transaction.id, "a": revenue.id})
    session.commit()
    result = _run(runner, "billing", "verify-ledger")
    assert result.exit_code == 1
    assert (f"first failure: ledger transaction {transaction.id} (payment "
            f"payment:{month.payment.id}): does not balance in CNY: its entries sum to "
            "-123.45 CNY") in result.output
    assert "trial balance in CNY: sums to -123.45 CNY, not zero" in result.output
    result = _run(runner, "billing", "verify-statements")
    assert result.exit_code == 1
    assert f"under the statements: ledger transaction {transaction.id}" in result.output


# 3. The last audit entries deleted -------------------------------------------------------------

def test_deleting_the_last_audit_entries_shows_against_the_checkpoint(runner, session, month,
                                                                      tmp_path):
    last = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
    assert last >= 4
    assert _run(runner, "audit", "export", str(tmp_path / "before")).exit_code == 0
    session.execute(text("DELETE FROM audit_entries WHERE seq > :keep"), {"keep": last - 3})
    session.commit()
    # The chain that is left is whole: the old check alone cannot see it.
    assert _run(runner, "audit", "verify").exit_code == 0
    result = _run(runner, "audit", "verify", "--checkpoints")
    assert result.exit_code == 1
    assert f"audit entries seq={last - 2}..{last}: deleted" in result.output
    assert f"signed a chain of {last} entries" in result.output
    result = _run(runner, "billing", "verify-statements")
    assert result.exit_code == 1 and f"seq={last - 2}..{last}: deleted" in result.output
    # So does anyone with the exported files: the checkpoints kept from before, the log now.
    assert _run(runner, "audit", "export", str(tmp_path / "after")).exit_code == 0
    outcome = _third_party_mixed(tmp_path / "before", tmp_path / "after")
    assert outcome.returncode == 1
    assert f"audit entries seq={last - 2}..{last}: deleted" in outcome.stderr


def _third_party_mixed(kept: Path, now: Path) -> subprocess.CompletedProcess:
    """The checkpoints a third party kept earlier, against the audit log exported now."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "verify_checkpoint.py"), "--public-key",
         str(kept / "platform-key.pem"), str(kept / "checkpoints.jsonl"),
         "--audit", str(now / "audit.jsonl")], capture_output=True, text=True, timeout=60)


# 4. An audit entry rewritten and the chain re-hashed after it ----------------------------------

def _rewrite_and_rehash(session, seq):
    session.execute(text("UPDATE audit_entries SET object_id = 'forged' WHERE seq = :seq"),
                    {"seq": seq})
    session.expire_all()
    previous = session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == seq - 1)) \
        or audit.GENESIS_HASH
    for entry in session.scalars(select(AuditEntry).where(AuditEntry.seq >= seq)
                                 .order_by(AuditEntry.seq)).all():
        digest = audit.chain_hash(previous, entry.canonical())
        session.execute(text("UPDATE audit_entries SET prev_hash = :p, hash = :h "
                             "WHERE id = :id"), {"p": previous, "h": digest, "id": entry.id})
        previous = digest


def test_a_rewritten_and_re_hashed_audit_chain_shows_against_the_checkpoint(
        runner, session, month, tmp_path):
    last = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
    assert _run(runner, "audit", "export", str(tmp_path / "before")).exit_code == 0
    _rewrite_and_rehash(session, 2)
    session.commit()
    assert _run(runner, "audit", "verify").exit_code == 0  # internally consistent again
    result = _run(runner, "audit", "verify", "--checkpoints")
    assert result.exit_code == 1
    assert (f"audit entries seq=1..{last}: rewritten: entry seq={last} no longer has the hash "
            "checkpoint #1") in result.output
    assert _run(runner, "audit", "export", str(tmp_path / "after")).exit_code == 0
    outcome = _third_party_mixed(tmp_path / "before", tmp_path / "after")
    assert outcome.returncode == 1
    assert f"audit entry seq={last}: not the hash checkpoint #1 signed" in outcome.stderr


def test_a_later_checkpoint_narrows_a_rewrite_to_the_entries_after_the_one_before(
        runner, session, month, app):
    first_head = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
    audit.record(session, "test.after_close", object_type="test", object_id=1)
    audit.record(session, "test.after_close", object_type="test", object_id=2)
    checkpoints.sign_checkpoint(session, month.key, reason="on demand")
    session.commit()
    _rewrite_and_rehash(session, first_head + 2)
    session.commit()
    result = _run(runner, "audit", "verify", "--checkpoints")
    assert result.exit_code == 1
    assert f"audit entries seq={first_head + 1}..{first_head + 2}: rewritten" in result.output


# 5. A whole balanced ledger transaction deleted ------------------------------------------------

def test_deleting_a_balanced_transaction_shows_against_the_checkpoint(runner, session, month):
    receipt = session.scalar(select(LedgerTransaction).where(
        LedgerTransaction.kind == "bank_receipt").order_by(LedgerTransaction.id.desc()).limit(1))
    count = session.scalar(select(LedgerTransaction.id).order_by(
        LedgerTransaction.id.desc()).limit(1))
    session.execute(text("DELETE FROM ledger_entries WHERE transaction_id = :id"),
                    {"id": receipt.id})
    session.execute(text("DELETE FROM ledger_transactions WHERE id = :id"), {"id": receipt.id})
    session.commit()
    # Still balanced everywhere, every seal intact: only the signed digest can tell.
    assert verify_ledger(session) == []
    result = _run(runner, "audit", "verify", "--checkpoints")
    assert result.exit_code == 1
    assert (f"ledger transactions id 1..{count}: do not match checkpoint #1") in result.output
    assert "1 fewer transactions than it signed" in result.output
    result = _run(runner, "billing", "verify-statements")
    assert result.exit_code == 1 and "1 fewer transactions" in result.output


# 6. A stored balance that is not the sum of its entries ----------------------------------------

def test_a_wallet_balance_raised_behind_its_entries_is_named(runner, session, month):
    wallet = session.scalar(select(TokenWallet).where(
        TokenWallet.organization_id == month.buyer.id))
    assert wallet is not None and wallet.balance_tokens == 100_000
    session.execute(text("UPDATE token_wallets SET balance_tokens = balance_tokens + 900000 "
                         "WHERE id = :id"), {"id": wallet.id})
    session.commit()
    result = _run(runner, "billing", "verify-ledger")
    assert result.exit_code == 1
    assert (f"first failure: token wallet {wallet.id}: its stored balance is 1000000 tokens, "
            "but its entries sum to 100000") in result.output


# 7. A statement re-hashed, a checkpoint forged -------------------------------------------------

def test_a_statement_rewritten_with_its_hash_is_not_the_one_signed(runner, session, month):
    statement = month.statements[0]
    session.execute(text("UPDATE statement_lines SET amount_minor = amount_minor + 100000 "
                         "WHERE statement_id = :id AND position = 1"), {"id": statement.id})
    session.execute(text("UPDATE settlement_statements SET closing_minor = closing_minor + "
                         "100000, activity_minor = activity_minor + 100000 WHERE id = :id"),
                    {"id": statement.id})
    session.expire_all()
    forged = session.get(SettlementStatement, statement.id)
    session.execute(text("UPDATE settlement_statements SET content_hash = :h WHERE id = :id"),
                    {"h": compute.content_hash(compute.statement_content(forged)),
                     "id": statement.id})
    session.commit()
    result = _run(runner, "billing", "verify-statements")
    assert result.exit_code == 1
    assert (f"statement {statement.id}: {statement.number}: its hash is not the one "
            "checkpoint #1 signed at its close") in result.output


def test_a_forged_checkpoint_does_not_verify(runner, session, month):
    # Whoever truncated the log rewrites the checkpoint to match: the signature no longer does.
    last = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
    session.execute(text("DELETE FROM audit_entries WHERE seq = :seq"), {"seq": last})
    body = json.loads(month.checkpoint.payload)
    body["audit"].update(entries=last - 1, head_seq=last - 1, head_hash=session.scalar(
        select(AuditEntry.hash).where(AuditEntry.seq == last - 1)))
    session.execute(text("UPDATE integrity_checkpoints SET payload = :p WHERE id = :id"),
                    {"p": checkpoints.canonical_json(body), "id": month.checkpoint.id})
    session.commit()
    result = _run(runner, "audit", "verify", "--checkpoints")
    assert result.exit_code == 1
    assert ("checkpoint #1: its signature does not verify under the platform's public key"
            in result.output)


def test_a_checkpoint_is_checked_with_the_key_a_third_party_trusts(runner, session, month,
                                                                   tmp_path):
    other = tmp_path / "other.pem"
    other.write_text(checkpoints.public_key_pem(
        checkpoints.load_signing_key(tmp_path / "other-private.pem", create=True).public_key()))
    result = _run(runner, "audit", "verify", "--checkpoints", "--public-key", str(other))
    assert result.exit_code == 1 and "signature does not verify" in result.output


def test_the_close_job_signs_a_checkpoint_of_its_statements(app, db, session, passwords):
    settings = billing_settings()
    shop = listed_dataset(session, passwords)
    _, _, shopper = buyer(session, passwords)
    _, _, finance = platform_finance(session, passwords)
    order = place_mall_order(session, shopper, [CartItem(shop["package"].id)],
                             payment_method="bank_transfer")
    _pay_by_bank(session, finance, order, settings, "B-job")
    session.commit()
    # The postings are this month's and the job closes last month: they are moved into it (and
    # re-sealed, so that the ledger stays sound for what this test checks).
    session.execute(text("UPDATE ledger_transactions SET occurred_at = :t"), {
        "t": dt.datetime.strptime(f"{PERIOD}-02", "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)})
    for transaction_id in session.scalars(select(LedgerTransaction.id)).all():
        _reseal(session, transaction_id)
    session.commit()
    outcome = run_job(db, JOBS_BY_NAME["close-statements"], PERIOD, now=utcnow(),
                      settings=app.config, progress=lambda _: None)
    assert outcome.summary["checkpoint"] >= 1
    session.expire_all()
    made = session.scalars(select(SettlementStatement)
                           .where(SettlementStatement.period == PERIOD)).all()
    signed = checkpoints.latest_covering(session, made[0].number)
    assert json.loads(signed.payload)["statements"] == {s.number: s.content_hash for s in made}
    assert checkpoints.verify_checkpoints(
        session, checkpoints.signing_key_from_settings(app.config).public_key()) == []


def test_a_statement_bundle_is_checked_by_anyone_with_the_public_key(session, month, tmp_path):

    statement = month.statements[0]
    signed = checkpoints.latest_covering(session, statement.number)
    assert signed.id == month.checkpoint.id
    body = exports.statement_bundle(
        statement, exports.parties_of(session, statement), compute.statement_content(statement),
        checkpoints.exported(signed), checkpoints.public_key_pem(month.key.public_key()))
    with zipfile.ZipFile(io.BytesIO(body)) as bundle:
        bundle.extractall(tmp_path)
    command = [sys.executable, str(ROOT / "tools" / "verify_checkpoint.py"), "--public-key",
               str(tmp_path / "platform-key.pem"), str(tmp_path / "checkpoint.json"),
               "--statement", str(tmp_path / "statement.json")]
    outcome = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert outcome.returncode == 0, outcome.stderr
    # The participant's copy edited and its hash recomputed: the signature still says otherwise.
    document = json.loads((tmp_path / "statement.json").read_text())
    document["content"]["closing"] += 100_000
    document["content_hash"] = compute.content_hash(document["content"])
    (tmp_path / "statement.json").write_text(json.dumps(document))
    outcome = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert outcome.returncode == 1
    assert f"statement {statement.number}: not the hash checkpoint #1 signed" in outcome.stderr
