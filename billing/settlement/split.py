"""Splitting a payment across tax, the platform and the supply chain, and posting it.

A payment's gross amount is split exactly (``pricing.allocate``, largest remainder):

    gross = tax + platform fee + each participant's part

where the platform fee is ``platform_fee_bps`` of the net (gross − tax) and the rest of the net
is shared by the supply-chain revision snapshotted on the order. A refund reverses the split as
its exact mirror (``pricing.allocate_refund``): a full refund returns every part to zero, partial
refunds are proportional, and no part is ever reversed beyond what it received.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from sqlalchemy.orm import Session

from billing.settlement.ledger import LedgerTransaction, Line, Purpose, get_account, post
from market.core.errors import InvalidInput
from pricing.allocation import allocate, allocate_refund, validate_shares
from pricing.errors import PricingError
from pricing.money import Money

TAX = "tax"
PLATFORM = "platform"
PREPAID = "prepaid"
RECEIVABLE = "receivable"


def participant_key(role: str, organization_id: int) -> str:
    return f"{role}:{organization_id}"


def _organization(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


def split_payment(gross: Money, tax: Money, shares_bps: Sequence[tuple[str, int]],
                  platform_fee_bps: int) -> dict[str, Money]:
    """The parts of a payment: tax, the platform's fee, then each participant's share."""
    if tax.currency != gross.currency or tax.is_negative() or tax > gross:
        raise InvalidInput("Tax must be between zero and the gross amount.", field="tax")
    if not 0 <= platform_fee_bps <= 10_000:
        raise InvalidInput("The platform fee is 0 to 10,000 basis points.",
                           field="platform_fee_bps")
    try:
        shares = validate_shares(shares_bps)
    except PricingError as exc:
        raise InvalidInput(str(exc), field="shares_bps") from None
    net = gross - tax
    first = allocate(net, [(PLATFORM, platform_fee_bps), ("chain", 10_000 - platform_fee_bps)])
    return {TAX: tax, PLATFORM: first[PLATFORM], **allocate(first["chain"], shares)}


def prepaid_key(organization_id: int) -> str:
    """The part of a payment held as the buyer's own prepaid credit (a platform token pack)."""
    return f"{PREPAID}:{organization_id}"


def receivable_key(organization_id: int) -> str:
    """The part of a payment that settles what the buyer owed for usage already shared out."""
    return f"{RECEIVABLE}:{organization_id}"


def part_account(session: Session, key: str, currency: str):
    """The ledger account a part of a split is credited to."""
    return _account(session, key, currency)


def _account(session: Session, key: str, currency: str):
    if key.startswith(f"{RECEIVABLE}:"):
        return get_account(session, Purpose.BUYER_RECEIVABLE, currency, _organization(key))
    if key.startswith(f"{PREPAID}:"):
        return get_account(session, Purpose.BUYER_PREPAID, currency, _organization(key))
    if key == TAX:
        return get_account(session, Purpose.TAX_PAYABLE, currency)
    if key == PLATFORM:
        return get_account(session, Purpose.PLATFORM_REVENUE, currency)
    return get_account(session, Purpose.PARTICIPANT_PAYABLE, currency, _organization(key))


def post_payment(session: Session, split: Mapping[str, Money], *, idempotency_key: str,
                 reference: tuple[str, object], paid_from_prepaid: int | None = None
                 ) -> LedgerTransaction:
    """Money received into platform clearing, owed onward to tax, platform and participants.

    ``paid_from_prepaid``: the buyer organization whose prepaid credit pays instead (a bank
    transfer is first received as the buyer's credit, then applied to its invoice).
    """
    gross = Money.sum(split.values(), next(iter(split.values())).currency)
    source = (get_account(session, Purpose.PLATFORM_CLEARING, gross.currency)
              if paid_from_prepaid is None else
              get_account(session, Purpose.BUYER_PREPAID, gross.currency, paid_from_prepaid))
    lines = [Line.debit(source, gross)]
    lines += [Line.credit(_account(session, key, part.currency), part)
              for key, part in split.items()]
    return post(session, "payment", lines, idempotency_key=idempotency_key, reference=reference,
                memo={"split": {key: str(part.amount) for key, part in split.items()}})


def post_refund(session: Session, split: Mapping[str, Money],
                already_refunded: Mapping[str, Money], refund: Money, *,
                idempotency_key: str, reference: tuple[str, object]
                ) -> tuple[LedgerTransaction, dict[str, Money]]:
    """Reverse part of a payment as the mirror of its split; more than remains is refused."""
    try:
        parts = allocate_refund(split, already_refunded, refund)
    except PricingError as exc:
        raise InvalidInput(str(exc), field="amount") from None
    lines = [Line.credit(get_account(session, Purpose.PLATFORM_CLEARING, refund.currency), refund)]
    lines += [Line.debit(_account(session, key, part.currency), part)
              for key, part in parts.items()]
    transaction = post(session, "refund", lines, idempotency_key=idempotency_key,
                       reference=reference,
                       memo={"parts": {key: str(part.amount) for key, part in parts.items()}})
    return transaction, parts
