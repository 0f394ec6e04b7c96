"""dual_control

Money that one person records waits for a second when it reaches the dual-control threshold:
bank receipts and statement adjustments gain a status, their maker's organization and role, and
who decided them. Adjustments gain a reason code and their evidence, and keep no ledger
transaction until posted. A bank reference is unique among receipts that were not rejected.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 17:00:00
"""

from alembic import op
import sqlalchemy as sa

from market.db import UTCDateTime


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

LIVE = sa.text("status <> 'rejected'")


def _decision_columns(batch) -> None:
    batch.add_column(sa.Column('decided_by_id', sa.Integer(), nullable=True))
    batch.add_column(sa.Column('decided_at', UTCDateTime(timezone=True), nullable=True))
    batch.add_column(sa.Column('decision_note', sa.Text(), nullable=False, server_default=''))


def upgrade() -> None:
    with op.batch_alter_table('bank_receipts') as batch:
        batch.add_column(sa.Column('status', sa.String(length=20), nullable=False,
                                   server_default='confirmed'))
        batch.add_column(sa.Column('recorded_by_org_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('recorded_by_role', sa.String(length=20), nullable=True))
        _decision_columns(batch)
        batch.create_foreign_key(batch.f('fk_bank_receipts_recorded_by_org_id_organizations'),
                                 'organizations', ['recorded_by_org_id'], ['id'])
        batch.create_foreign_key(batch.f('fk_bank_receipts_decided_by_id_users'), 'users',
                                 ['decided_by_id'], ['id'])
        batch.create_check_constraint(
            batch.f('ck_bank_receipts_status_known'),
            "status IN ('pending_approval', 'confirmed', 'rejected')")
        batch.drop_constraint(batch.f('uq_bank_receipts_bank_reference'), type_='unique')
        batch.create_index('uq_bank_receipts_live_reference', ['bank_reference'], unique=True,
                           sqlite_where=LIVE, postgresql_where=LIVE)
    with op.batch_alter_table('statement_adjustments') as batch:
        batch.add_column(sa.Column('reason_code', sa.String(length=40), nullable=False,
                                   server_default='other'))
        batch.add_column(sa.Column('evidence', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('status', sa.String(length=20), nullable=False,
                                   server_default='posted'))
        batch.add_column(sa.Column('created_by_org_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('created_by_role', sa.String(length=20), nullable=True))
        _decision_columns(batch)
        batch.alter_column('ledger_transaction_id', existing_type=sa.Integer(), nullable=True)
        batch.create_foreign_key(
            batch.f('fk_statement_adjustments_created_by_org_id_organizations'),
            'organizations', ['created_by_org_id'], ['id'])
        batch.create_foreign_key(batch.f('fk_statement_adjustments_decided_by_id_users'),
                                 'users', ['decided_by_id'], ['id'])
        batch.create_check_constraint(
            batch.f('ck_statement_adjustments_status_known'),
            "status IN ('pending_approval', 'posted', 'rejected')")


def downgrade() -> None:
    with op.batch_alter_table('statement_adjustments') as batch:
        batch.drop_constraint(batch.f('ck_statement_adjustments_status_known'), type_='check')
        batch.drop_constraint(batch.f('fk_statement_adjustments_decided_by_id_users'),
                              type_='foreignkey')
        batch.drop_constraint(batch.f('fk_statement_adjustments_created_by_org_id_organizations'),
                              type_='foreignkey')
        batch.alter_column('ledger_transaction_id', existing_type=sa.Integer(), nullable=False)
        for column in ('decision_note', 'decided_at', 'decided_by_id', 'created_by_role',
                       'created_by_org_id', 'status', 'evidence', 'reason_code'):
            batch.drop_column(column)
    with op.batch_alter_table('bank_receipts') as batch:
        batch.drop_index('uq_bank_receipts_live_reference')
        batch.create_unique_constraint(batch.f('uq_bank_receipts_bank_reference'),
                                       ['bank_reference'])
        batch.drop_constraint(batch.f('ck_bank_receipts_status_known'), type_='check')
        batch.drop_constraint(batch.f('fk_bank_receipts_decided_by_id_users'), type_='foreignkey')
        batch.drop_constraint(batch.f('fk_bank_receipts_recorded_by_org_id_organizations'),
                              type_='foreignkey')
        for column in ('decision_note', 'decided_at', 'decided_by_id', 'recorded_by_role',
                       'recorded_by_org_id', 'status'):
            batch.drop_column(column)
