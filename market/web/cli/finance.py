"""``flask finance``: what the platform's finance people do from the command line — verify a
buyer's tax status and run credit lines (maker-checker).

Every command acts as the finance person named by ``--by`` (an e-mail of an owner or finance
member of a platform organization), so the audit log names who did it and a second approver is
a different person, exactly as on the console page. Each command is one unit of work.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from billing.metering import credit_lines
from billing.models import CreditLineChangeStatus
from market.accounts import services as accounts
from market.accounts.authz import Principal
from market.accounts.models import Organization
from market.core.errors import MarketError
from pricing.money import Money

finance_cli = AppGroup("finance", help="Platform finance: tax status, credit lines.")


def _database():
    return current_app.extensions["market.db"]


def _platform_finance(session, email: str) -> Principal:
    user = accounts.get_user_by_email(session, email)
    for membership in user.memberships:
        principal = accounts.principal_for_user(user, membership.organization_id)
        if principal.is_platform_finance:
            return principal
    raise click.ClickException(f"{email} is not a finance person of the platform.")


def _organization(session, reference: str) -> Organization:
    query = select(Organization).where(Organization.slug == reference)
    if reference.isdigit():
        query = select(Organization).where(Organization.id == int(reference))
    organization = session.scalar(query)
    if organization is None:
        raise click.ClickException(f"No organization {reference!r} (give its id or slug).")
    return organization


def _fail(error: MarketError) -> click.ClickException:
    where = f" ({error.field})" if error.field else ""
    return click.ClickException(f"{error.detail}{where}")


by_option = click.option("--by", "email", required=True,
                         help="E-mail of the platform finance person acting.")


@finance_cli.command("tax-status")
@click.argument("organization")
@click.argument("status", type=click.Choice(["general", "small_scale", "exempt"]))
@click.option("--evidence", required=True,
              help="The certificate or registration the status was verified from.")
@by_option
def tax_status_command(organization: str, status: str, evidence: str, email: str) -> None:
    """Set ORGANIZATION's (id or slug) verified tax status to STATUS."""
    try:
        with _database().session() as session, session.begin():
            principal = _platform_finance(session, email)
            org = accounts.set_tax_status(session, principal,
                                          _organization(session, organization).id,
                                          status=status, evidence=evidence)
            name = org.name
    except MarketError as error:
        raise _fail(error) from None
    click.echo(f"{name}: tax status {status}")


credit_cli = AppGroup("credit-line", help="Open, change, close and approve credit lines.")
finance_cli.add_command(credit_cli)


def _describe(change) -> str:
    limit = Money.from_minor(change.limit_minor, change.currency)
    return (f"change {change.id}: {change.kind} credit line of organization "
            f"{change.organization_id} to {limit} by {change.payment_method}: {change.status}")


def _step_as(email: str, step) -> None:
    """Take one credit-line step as the platform finance person EMAIL, in one transaction, and
    print the change it made (a refusal exits with its message)."""
    try:
        with _database().session() as session, session.begin():
            text = _describe(step(session, _platform_finance(session, email)))
    except MarketError as error:
        raise _fail(error) from None
    click.echo(text)


@credit_cli.command("set")
@click.argument("organization")
@click.argument("amount")
@click.argument("currency")
@click.option("--payment-method", default="bank_transfer",
              type=click.Choice(["bank_transfer", "card"]))
@click.option("--reason", required=True)
@by_option
def credit_set(organization: str, amount: str, currency: str, payment_method: str, reason: str,
               email: str) -> None:
    """Open ORGANIZATION's credit line in CURRENCY, or change its limit, to AMOUNT."""
    def ask(session, principal):
        limit = Money(amount, currency.upper())
        return credit_lines.request_change(
            session, principal, _organization(session, organization).id, limit=limit,
            payment_method=payment_method, reason=reason,
            approval_threshold=credit_lines.approval_threshold(current_app.extensions["market.billing"],
                                                               limit.currency))
    _step_as(email, ask)


@credit_cli.command("close")
@click.argument("credit_line_id", type=int)
@click.option("--reason", required=True)
@by_option
def credit_close(credit_line_id: int, reason: str, email: str) -> None:
    """Close credit line CREDIT_LINE_ID: no more calls on credit."""
    _step_as(email, lambda session, principal: credit_lines.close_credit_line(
        session, principal, credit_line_id, reason=reason))


@credit_cli.command("approve")
@click.argument("change_id", type=int)
@by_option
def credit_approve(change_id: int, email: str) -> None:
    """Approve pending change CHANGE_ID (as a second person, not its maker)."""
    _step_as(email, lambda session, principal: credit_lines.approve_change(
        session, principal, change_id))


@credit_cli.command("reject")
@click.argument("change_id", type=int)
@click.option("--reason", required=True)
@by_option
def credit_reject(change_id: int, reason: str, email: str) -> None:
    """Reject pending change CHANGE_ID."""
    _step_as(email, lambda session, principal: credit_lines.reject_change(
        session, principal, change_id, reason=reason))


@credit_cli.command("list")
@by_option
def credit_list(email: str) -> None:
    """Every credit line, then the changes waiting for a second approver."""
    with _database().session() as session:
        principal = _platform_finance(session, email)
        for line in credit_lines.list_credit_lines(session, principal).all():
            state = "closed" if line.suspended_at else "open"
            click.echo(f"credit line {line.id}: organization {line.organization_id} "
                       f"{Money.from_minor(line.used_minor, line.currency)} used of "
                       f"{Money.from_minor(line.limit_minor, line.currency)} ({state})")
        pending = credit_lines.list_changes(session, principal,
                                            status=CreditLineChangeStatus.PENDING)
        for change in pending.all():
            click.echo(_describe(change))
