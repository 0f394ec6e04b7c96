"""integrity_checkpoints

Ledger transactions carry a seal (SHA-256 of what they say), written for the transactions
already posted from their rows as they stand; signed checkpoints of the audit chain's head and
the ledger's digest get their own table.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 09:00:00
"""

import datetime as dt
import hashlib
import json

from alembic import op
import sqlalchemy as sa

from market.db import UTCDateTime


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def _seal(row, entries) -> str:
    # The rule of billing.ledger.seal_of at this revision, kept here so that a later change of
    # the code cannot change what this migration wrote.
    occurred_at = row.occurred_at
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=dt.timezone.utc)
    memo = row.memo if isinstance(row.memo, dict) else json.loads(row.memo or "{}")
    canonical = json.dumps({
        "kind": row.kind, "idempotency_key": row.idempotency_key,
        "reference": [row.reference_type, row.reference_id], "memo": memo,
        "occurred_at": occurred_at.astimezone(dt.timezone.utc).isoformat(),
        "entries": sorted([e.account_id, e.purpose, e.organization_id, e.account_currency,
                           e.amount_minor, e.currency] for e in entries),
    }, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table('ledger_transactions') as batch:
        batch.add_column(sa.Column('seal', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    transactions = sa.table(
        'ledger_transactions', sa.column('id', sa.Integer), sa.column('kind', sa.String),
        sa.column('idempotency_key', sa.String), sa.column('reference_type', sa.String),
        sa.column('reference_id', sa.String), sa.column('memo', sa.JSON),
        sa.column('occurred_at', UTCDateTime(timezone=True)), sa.column('seal', sa.String))
    entries = sa.table(
        'ledger_entries', sa.column('transaction_id', sa.Integer),
        sa.column('account_id', sa.Integer), sa.column('amount_minor', sa.BigInteger),
        sa.column('currency', sa.String))
    accounts = sa.table(
        'ledger_accounts', sa.column('id', sa.Integer), sa.column('purpose', sa.String),
        sa.column('organization_id', sa.Integer), sa.column('currency', sa.String))
    by_transaction: dict[int, list] = {}
    for entry in conn.execute(
            sa.select(entries.c.transaction_id, entries.c.account_id, entries.c.amount_minor,
                      entries.c.currency, accounts.c.purpose, accounts.c.organization_id,
                      accounts.c.currency.label('account_currency'))
            .join(accounts, accounts.c.id == entries.c.account_id)):
        by_transaction.setdefault(entry.transaction_id, []).append(entry)
    seals = [{"tid": row.id, "seal": _seal(row, by_transaction.get(row.id, []))}
             for row in conn.execute(sa.select(transactions))]
    if seals:
        conn.execute(transactions.update().where(transactions.c.id == sa.bindparam('tid'))
                     .values(seal=sa.bindparam('seal')), seals)
    with op.batch_alter_table('ledger_transactions') as batch:
        batch.alter_column('seal', existing_type=sa.String(length=64), nullable=False)

    op.create_table(
        'integrity_checkpoints',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('signed_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.String(length=80), nullable=False),
        sa.Column('key_id', sa.String(length=64), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('signature', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_integrity_checkpoints')),
        sa.UniqueConstraint('number', name=op.f('uq_integrity_checkpoints_number')),
    )


def downgrade() -> None:
    op.drop_table('integrity_checkpoints')
    with op.batch_alter_table('ledger_transactions') as batch:
        batch.drop_column('seal')
