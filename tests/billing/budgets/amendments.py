"""What a budget line's amendments must add up to, as the budget tests check it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.models import BudgetAmendment, BudgetLine

SIGNS = {"increase": 1, "transfer_in": 1, "decrease": -1, "transfer_out": -1}


def amendments_of(session: Session, line: BudgetLine) -> list[BudgetAmendment]:
    return list(session.scalars(select(BudgetAmendment).where(
        BudgetAmendment.line_id == line.id).order_by(BudgetAmendment.id)))


def approved_from_amendments(session: Session, line: BudgetLine) -> int:
    """The original amount plus every amendment: what ``approved_minor`` must always equal."""
    return line.original_minor + sum(SIGNS[a.kind] * a.amount_minor
                                     for a in amendments_of(session, line))
