"""Splitting a payment across the supply chain, and reversing it on refund.

Shares are in basis points (bps): non-negative integers that sum to exactly
10,000 (100%), keyed by participant (the data owner, the annotator, the
marketplace...). Anything else raises ``InvalidShares`` (field
``shares_bps``).

Allocation rule: largest remainder (Hamilton)
----------------------------------------------
Each participant first gets the floor of its exact share, in minor units;
the minor units left over go one each to the participants with the largest
fractional remainders, ties broken by participant order (the order of the
mapping or sequence given). So the parts sum exactly to the payment, each
part is within one minor unit of its exact share, a participant with 0 bps
gets nothing, and the result is deterministic.

Worked example: CNY 100.01 (10,001 fen) split 3,333 / 3,333 / 3,334 bps:
exact shares 3,333.3333, 3,333.3333, 3,334.3334 fen; floors 3,333 + 3,333 +
3,334 = 10,000; the one fen left goes to the largest remainder (the third,
.3334) -> CNY 33.33, 33.33, 33.35. Negative amounts (chargebacks) are split
as the exact negation of the positive split.

Refund rule: cumulative largest remainder
-----------------------------------------
A refund is allocated so that the *cumulative* reversal per participant is
the largest-remainder split of the cumulative refunded amount, weighted by
what each participant originally received. Hence:

* a full refund (in one go or in parts) reverses exactly the original split;
* partial refunds are proportional, and refunding CNY 30 then CNY 20 reverses
  the same per participant as refunding CNY 50 at once;
* no participant is ever reversed more than it received, and refunding more
  than remains raises ``OverRefund`` (field ``amount``).

Largest remainder can, rarely, give a participant one minor unit *less* of a
larger total than of a smaller one (the "Alabama paradox"), and a refund
cannot take money back from a participant. In that case the participant keeps
its cumulative reversal and the others catch up to their exact shares (see
``_catch_up``): every part stays between 0 and what the participant has left,
and cumulative reversals stay within one minor unit of their exact shares
whenever any split allows it. After some earlier splits no split can: a
payment received as 0.01 by six participants and 0.05 by two, refunded 0.03,
0.09 and then 0.01, leaves the six at 0.01 each (their exact 0.008125 each is
already passed), so the last 0.01 can only make one of the two 0.05
participants 0.04 and the other stays at 0.03 against an exact 0.040625.
Such deviations stay under two minor units and vanish at the full refund.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Sequence, TypeVar, Union

from .errors import (
    CurrencyMismatch,
    FloatNotAllowed,
    InvalidAmount,
    InvalidShares,
    OverRefund,
    field_prefix,
)
from .money import Money

__all__ = [
    "BPS_TOTAL",
    "validate_shares",
    "allocate",
    "allocate_refund",
    "split_minor",
    "AllocatedPayment",
]

BPS_TOTAL = 10_000

K = TypeVar("K", bound=Hashable)
SharesInput = Union[Mapping[K, int], Iterable[tuple[K, int]]]


def validate_shares(shares_bps: SharesInput) -> tuple[tuple[Any, int], ...]:
    """Return the shares as ``((participant, bps), ...)`` in the given order.

    Rule: at least one participant, no participant twice, each share a
    non-negative integer, all shares summing to exactly 10,000 bps.
    """
    if isinstance(shares_bps, (str, bytes)):
        raise InvalidShares("shares_bps must map participants to basis points", field="shares_bps")
    pairs = list(shares_bps.items()) if isinstance(shares_bps, Mapping) else list(shares_bps)
    if not pairs:
        raise InvalidShares("shares_bps needs at least one participant", field="shares_bps")
    seen: set[Any] = set()
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise InvalidShares("each share must be a (participant, bps) pair", field="shares_bps")
        key, bps = pair
        if key in seen:
            raise InvalidShares(f"participant {key!r} appears twice", field="shares_bps")
        seen.add(key)
        if isinstance(bps, float):
            raise FloatNotAllowed(
                f"share of {key!r} must be integer basis points, not a float", field="shares_bps"
            )
        if isinstance(bps, bool) or not isinstance(bps, int):
            raise InvalidShares(f"share of {key!r} must be integer basis points", field="shares_bps")
        if bps < 0:
            raise InvalidShares(f"share of {key!r} is negative ({bps} bps)", field="shares_bps")
    total = sum(bps for _, bps in pairs)
    if total != BPS_TOTAL:
        raise InvalidShares(
            f"shares sum to {total} bps; they must sum to exactly {BPS_TOTAL} (100%)",
            field="shares_bps",
        )
    return tuple((key, bps) for key, bps in pairs)


def split_minor(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` minor units by non-negative integer ``weights``, exactly.

    Rule: largest remainder, ties to the earlier weight, so the parts sum to ``total`` and each
    is within one unit of its exact share; a negative total is the negation of the positive
    split, and weights that sum to zero get nothing.
    """
    if any(w < 0 for w in weights):
        raise InvalidShares("weights cannot be negative", field="weights")
    weight_sum = sum(weights)
    if not weight_sum:
        return [0] * len(weights)
    sign, magnitude = (-1 if total < 0 else 1), abs(total)
    floors = []
    remainders = []
    for w in weights:
        q, r = divmod(magnitude * w, weight_sum)
        floors.append(q)
        remainders.append(r)
    left = magnitude - sum(floors)
    # Sort key: largest remainder first, then earliest participant.
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        floors[i] += 1
    return [sign * part for part in floors]


def allocate(amount: Money, shares_bps: SharesInput) -> dict[Any, Money]:
    """Split ``amount`` across participants by basis points, exactly.

    Rule: largest remainder, ties by participant order; the parts sum to
    ``amount`` and each is within one minor unit of its exact share.
    """
    if not isinstance(amount, Money):
        raise InvalidAmount("amount must be Money", field="amount")
    pairs = validate_shares(shares_bps)
    parts = split_minor(amount.minor, [bps for _, bps in pairs])
    return {key: Money.from_minor(part, amount.currency) for (key, _), part in zip(pairs, parts)}


def _catch_up(cumulative: int, received: Sequence[int], refunded: Sequence[int]) -> list[int]:
    """Cumulative reversals for ``cumulative`` that never go below ``refunded``.

    Used when largest remainder would move a participant backwards. Everyone
    first gets the larger of what it already has and the floor of its exact
    share; the units still to give go to the largest fractional remainders
    (ties by participant order); if there are too many, they are taken back,
    one per participant per round, from those above what they already had,
    smallest remainder first. This keeps every cumulative reversal within one
    minor unit of its exact share whenever any split can.
    """
    payment = sum(received)
    floors, remainders = [], []
    for w in received:
        q, r = divmod(cumulative * w, payment)
        floors.append(q)
        remainders.append(r)
    result = [max(r, f) for r, f in zip(refunded, floors)]
    left = cumulative - sum(result)
    if left >= 0:
        short = [i for i in range(len(received)) if result[i] == floors[i] and remainders[i]]
        for i in sorted(short, key=lambda i: (-remainders[i], i))[:left]:
            result[i] += 1
        return result
    order = sorted(range(len(received)), key=lambda i: (remainders[i], -i))
    while left < 0:
        for i in order:
            if left < 0 and result[i] > refunded[i]:
                result[i] -= 1
                left += 1
    return result


def allocate_refund(
    original: Mapping[Any, Money],
    already_refunded: Mapping[Any, Money],
    refund: Money,
) -> dict[Any, Money]:
    """Split a refund so that cumulative reversals mirror the original split.

    Rule: cumulative largest remainder (module docstring); each part is
    between zero and what the participant has left; a refund larger than
    what remains raises ``OverRefund`` (field ``amount``).
    """
    if not isinstance(refund, Money):
        raise InvalidAmount("refund amount must be Money", field="amount")
    keys = list(original)
    if not keys:
        raise InvalidShares("the original allocation has no participants", field="original")
    currency = refund.currency
    received = []
    for key in keys:
        money = original[key]
        if money.currency != currency:
            raise CurrencyMismatch(
                f"refund is in {currency} but the payment was in {money.currency}", field="amount"
            )
        if money.is_negative():
            raise InvalidAmount(f"participant {key!r} received a negative amount", field="original")
        received.append(money.minor)
    refunded = []
    for key, got in zip(keys, received):
        money = already_refunded.get(key, Money.zero(currency))
        if money.currency != currency:
            raise CurrencyMismatch(
                f"refunds of {key!r} are in {money.currency}, not {currency}", field="already_refunded"
            )
        if money.is_negative() or money.minor > got:
            raise OverRefund(
                f"participant {key!r} has {money} refunded but received "
                f"{Money.from_minor(got, currency)}",
                field="already_refunded",
            )
        refunded.append(money.minor)
    unknown = [key for key in already_refunded if key not in original]
    if unknown:
        raise InvalidShares(f"participant {unknown[0]!r} is not in the original split", field="already_refunded")

    if not refund.is_positive():
        raise InvalidAmount("a refund must be a positive amount", field="amount")
    remaining = sum(received) - sum(refunded)
    if refund.minor > remaining:
        raise OverRefund(
            f"refund of {refund} exceeds the {Money.from_minor(remaining, currency)} "
            "still refundable on this payment",
            field="amount",
        )

    cumulative = sum(refunded) + refund.minor
    target = split_minor(cumulative, received)
    if any(t < r for t, r in zip(target, refunded)):
        target = _catch_up(cumulative, received, refunded)
    parts = [t - r for t, r in zip(target, refunded)]
    return {key: Money.from_minor(part, currency) for key, part in zip(keys, parts)}


@dataclass(frozen=True)
class AllocatedPayment:
    """A payment, its split, and the refunds reversed from it so far.

    Participants are strings (they are JSON object keys when persisted).
    Immutable: ``refund()`` returns the parts of the refund and a new
    ``AllocatedPayment`` that includes it.
    """

    amount: Money
    shares_bps: tuple[tuple[str, int], ...]
    refunded: tuple[tuple[str, Money], ...] = ()
    received: tuple[tuple[str, Money], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Money):
            raise InvalidAmount("amount must be Money", field="amount")
        if self.amount.is_negative():
            raise InvalidAmount("a payment cannot be negative", field="amount")
        shares = validate_shares(self.shares_bps)
        for key, _ in shares:
            if not isinstance(key, str):
                raise InvalidShares("participants must be strings", field="shares_bps")
        object.__setattr__(self, "shares_bps", shares)
        received = allocate(self.amount, shares)
        object.__setattr__(self, "received", tuple(received.items()))
        raw = dict(self.refunded)
        unknown = [key for key in raw if key not in received]
        if unknown:
            raise InvalidShares(f"participant {unknown[0]!r} is not in the split", field="refunded")
        refunded = []
        for key, got in received.items():
            money = raw.get(key, Money.zero(self.amount.currency))
            if not isinstance(money, Money):
                raise InvalidAmount(f"refunded amount of {key!r} must be Money", field="refunded")
            if money.currency != self.amount.currency:
                raise CurrencyMismatch(f"refunds of {key!r} are not in {self.amount.currency}", field="refunded")
            if money.is_negative() or money > got:
                raise OverRefund(f"{key!r} has {money} refunded but received {got}", field="refunded")
            refunded.append((key, money))
        object.__setattr__(self, "refunded", tuple(refunded))

    @classmethod
    def create(cls, amount: Money, shares_bps: SharesInput) -> "AllocatedPayment":
        """Split a new payment; nothing refunded yet."""
        return cls(amount=amount, shares_bps=validate_shares(shares_bps))

    @property
    def received_by_participant(self) -> dict[str, Money]:
        """What each participant received from the payment."""
        return dict(self.received)

    @property
    def refunded_by_participant(self) -> dict[str, Money]:
        """What has been reversed from each participant so far."""
        return dict(self.refunded)

    @property
    def remaining_by_participant(self) -> dict[str, Money]:
        """What each participant still holds of the payment."""
        refunded = dict(self.refunded)
        return {key: got - refunded[key] for key, got in self.received}

    @property
    def total_refunded(self) -> Money:
        """The sum of all refunds so far."""
        return Money.sum((m for _, m in self.refunded), self.amount.currency)

    @property
    def refundable(self) -> Money:
        """What can still be refunded on this payment."""
        return self.amount - self.total_refunded

    def refund(self, amount: Money) -> tuple[dict[str, Money], "AllocatedPayment"]:
        """Reverse ``amount`` of this payment: its parts and the updated payment.

        Rule: see ``allocate_refund``; raises ``OverRefund`` past ``refundable``.
        """
        parts = allocate_refund(self.received_by_participant, self.refunded_by_participant, amount)
        refunded = self.refunded_by_participant
        updated = tuple((key, refunded[key] + parts[key]) for key, _ in self.received)
        return parts, AllocatedPayment(self.amount, self.shares_bps, updated)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: amounts as decimal strings, shares as an ordered list."""
        return {
            "amount": self.amount.to_dict(),
            "shares_bps": [[key, bps] for key, bps in self.shares_bps],
            "received": {key: m.to_dict() for key, m in self.received},
            "refunded": {key: m.to_dict() for key, m in self.refunded},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AllocatedPayment":
        """Inverse of ``to_dict``; ``received`` is recomputed, and checked if given."""
        if not isinstance(data, Mapping):
            raise InvalidAmount("expected a JSON object", field="amount")
        with field_prefix("amount"):
            amount = Money.from_dict(data.get("amount"))
        shares = [tuple(pair) if isinstance(pair, list) else pair for pair in data.get("shares_bps", [])]
        refunded_raw = data.get("refunded") or {}
        refunded = []
        for key, value in refunded_raw.items():
            with field_prefix(f"refunded.{key}"):
                refunded.append((key, Money.from_dict(value)))
        payment = cls(amount=amount, shares_bps=tuple(shares), refunded=tuple(refunded))
        stored = data.get("received")
        if stored is not None:
            if {k: Money.from_dict(v) for k, v in stored.items()} != payment.received_by_participant:
                # A stored split that no longer matches the rule means the
                # record was edited or the rule changed; refuse to guess.
                raise InvalidShares("stored split does not match the allocation rule", field="received")
        return payment
