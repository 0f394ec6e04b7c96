"""list_values_and_replayed_headers

Usage events keep their list value (what the tokens are worth at list price, in millionths of
the minor unit; 0 for the events recorded before it was kept); a stored Idempotency-Key
response keeps the headers its replay repeats.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('list_micros', sa.BigInteger(), server_default='0',
                                      nullable=False))
    with op.batch_alter_table('idempotency_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('headers', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('idempotency_records', schema=None) as batch_op:
        batch_op.drop_column('headers')
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.drop_column('list_micros')
