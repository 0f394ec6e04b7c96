"""What a paid order grants, and what a full refund takes back.

A mall package grants a download of the listed version (until its licence ends) and, when it
includes API tokens, an API entitlement and the tokens in the buyer's wallet for that dataset.
A token pack credits a wallet. Wallet balances only change through ``WalletEntry`` rows, each
with a unique reference, so the same grant is never applied twice.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.catalog.listings import reviewed_version_ids
from market.core.db import utcnow
from market.core.errors import Forbidden
from billing.models import Entitlement, Order, OrderLine, TokenWallet, WalletEntry
from pricing.periods import add_months


def wallet_scope(dataset_id: int | None) -> str:
    return "platform" if dataset_id is None else f"dataset:{dataset_id}"


def get_wallet(session: Session, organization_id: int, scope: str, *,
               for_update: bool = False) -> TokenWallet:
    """The organization's wallet for a scope, created empty on first use."""
    query = select(TokenWallet).where(TokenWallet.organization_id == organization_id,
                                      TokenWallet.scope == scope)
    wallet = session.scalar(query.with_for_update() if for_update else query)
    if wallet is None:
        dataset_id = int(scope.split(":", 1)[1]) if scope.startswith("dataset:") else None
        wallet = TokenWallet(organization_id=organization_id, scope=scope,
                             dataset_id=dataset_id, balance_tokens=0)
        session.add(wallet)
        session.flush()  # entries refer to the wallet by id
    return wallet


def change_wallet(session: Session, wallet: TokenWallet, delta: int, *, kind: str,
                  reference: str, order_line_id: int | None = None,
                  note: str = "") -> WalletEntry | None:
    """Apply one change to a wallet's balance, once per reference; None if already applied.

    The balance never goes below zero (a database check enforces it as well).
    """
    existing = session.scalar(select(WalletEntry).where(WalletEntry.reference == reference))
    if existing is not None:
        return None
    if wallet.balance_tokens + delta < 0:
        raise Forbidden("The wallet does not hold that many tokens.", field="tokens")
    wallet.balance_tokens += delta
    entry = WalletEntry(wallet=wallet, kind=kind, delta_tokens=delta,
                        balance_after=wallet.balance_tokens, order_line_id=order_line_id,
                        reference=reference, note=note)
    session.add(entry)
    return entry


def _licence_end(line: OrderLine, start: dt.datetime) -> dt.datetime | None:
    months = line.terms.get("offer", {}).get("licence_months")
    if months is None:
        return None
    return dt.datetime.combine(add_months(start.date(), int(months)), start.timetz())


def grant_order(session: Session, order: Order) -> list[Entitlement]:
    """Grant what a paid mall or token-pack order bought."""
    now = utcnow()
    granted: list[Entitlement] = []
    for line in order.lines:
        if line.kind == "mall_package":
            terms = line.terms.get("offer", {})
            until = _licence_end(line, now)
            if terms.get("download", True):
                granted.append(Entitlement(
                    organization_id=order.organization_id, dataset_id=line.dataset_id,
                    version_id=line.version_id, kind="download", order_line_id=line.id,
                    valid_from=now, valid_until=until))
            if line.tokens:
                granted.append(Entitlement(
                    organization_id=order.organization_id, dataset_id=line.dataset_id,
                    version_id=None, kind="api", order_line_id=line.id, valid_from=now,
                    valid_until=until))
        if line.tokens and line.kind in ("mall_package", "token_pack"):
            scope = line.terms.get("scope") or wallet_scope(line.dataset_id)
            wallet = get_wallet(session, order.organization_id, scope, for_update=True)
            change_wallet(session, wallet, line.tokens, kind="grant",
                          reference=f"grant:line:{line.id}", order_line_id=line.id,
                          note=f"order {order.number}")
    session.add_all(granted)
    return granted


def revoke_order(session: Session, order: Order, reason: str) -> None:
    """Take back what a fully refunded order granted: its entitlements end now, and the
    tokens it put in a wallet come out again, as many as are still unspent."""
    now = utcnow()
    line_ids = [line.id for line in order.lines]
    for entitlement in session.scalars(select(Entitlement).where(
            Entitlement.order_line_id.in_(line_ids), Entitlement.revoked_at.is_(None))):
        entitlement.revoked_at = now
        entitlement.revoked_reason = reason[:200]
    for line in order.lines:
        if not line.tokens or line.kind not in ("mall_package", "token_pack"):
            continue
        scope = line.terms.get("scope") or wallet_scope(line.dataset_id)
        wallet = get_wallet(session, order.organization_id, scope, for_update=True)
        take = min(line.tokens, wallet.balance_tokens)
        if take:
            change_wallet(session, wallet, -take, kind="revoke",
                          reference=f"revoke:line:{line.id}", order_line_id=line.id,
                          note=f"refund of order {order.number}")


def active_entitlement(session: Session, organization_id: int, dataset_id: int, *,
                       kind: str, version_id: int | None = None,
                       at: dt.datetime | None = None) -> Entitlement | None:
    """An entitlement that lets the organization use the dataset (version) now, if any.

    Rule: a pinned entitlement covers its version; one that follows the dataset covers only
    versions that passed the exchange's review (never a draft the supplier has not submitted).
    """
    at = at or utcnow()
    candidates = session.scalars(select(Entitlement).where(
        Entitlement.organization_id == organization_id, Entitlement.dataset_id == dataset_id,
        Entitlement.kind == kind, Entitlement.revoked_at.is_(None)).order_by(Entitlement.id))
    reviewed: set[int] | None = None
    for entitlement in candidates:
        if not entitlement.active_at(at):
            continue
        if version_id is None or entitlement.version_id == version_id:
            return entitlement
        if entitlement.version_id is None:
            if reviewed is None:
                reviewed = reviewed_version_ids(session, dataset_id)
            if version_id in reviewed:
                return entitlement
    return None


def list_entitlements(session: Session, organization_id: int) -> list[Entitlement]:
    return list(session.scalars(select(Entitlement).where(
        Entitlement.organization_id == organization_id).order_by(Entitlement.id.desc())))


def list_wallets(session: Session, organization_id: int) -> list[TokenWallet]:
    return list(session.scalars(select(TokenWallet).where(
        TokenWallet.organization_id == organization_id).order_by(TokenWallet.scope)))
