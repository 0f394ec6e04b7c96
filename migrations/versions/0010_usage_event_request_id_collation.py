"""usage_event_request_id_collation

Usage events: on PostgreSQL the request id is compared byte by byte (the "C" collation), so a
batch's thousand look-ups and unique-index inserts skip linguistic comparison. SQLite already
compares bytes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 20:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.alter_column('usage_events', 'request_id', type_=sa.String(200, collation='C'),
                    existing_type=sa.String(200), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.alter_column('usage_events', 'request_id', type_=sa.String(200),
                    existing_type=sa.String(200, collation='C'), existing_nullable=False)
