"""payment_anomalies

What the payment processor reported that does not match what the marketplace asked for (a
stranger's intent naming our payment, a different amount, a refund that cannot be booked), kept
for finance and never applied.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 09:00:00
"""

from alembic import op
import sqlalchemy as sa

from market.db import UTCDateTime


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'payment_anomalies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=160), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('gateway', sa.String(length=20), nullable=False),
        sa.Column('object_ref', sa.String(length=100), nullable=True),
        sa.Column('payment_id', sa.Integer(), nullable=True),
        sa.Column('refund_id', sa.Integer(), nullable=True),
        sa.Column('event_id', sa.String(length=100), nullable=True),
        sa.Column('amount_minor', sa.BigInteger(), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('message', sa.String(length=500), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id'],
                                name=op.f('fk_payment_anomalies_payment_id_payments')),
        sa.ForeignKeyConstraint(['refund_id'], ['refunds.id'],
                                name=op.f('fk_payment_anomalies_refund_id_refunds')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_anomalies')),
        sa.UniqueConstraint('key', name=op.f('uq_payment_anomalies_key')),
    )
    with op.batch_alter_table('payment_anomalies') as batch:
        batch.create_index(batch.f('ix_payment_anomalies_payment_id'), ['payment_id'])
        batch.create_index(batch.f('ix_payment_anomalies_created_at'), ['created_at'])


def downgrade() -> None:
    with op.batch_alter_table('payment_anomalies') as batch:
        batch.drop_index(batch.f('ix_payment_anomalies_created_at'))
        batch.drop_index(batch.f('ix_payment_anomalies_payment_id'))
    op.drop_table('payment_anomalies')
