"""tax_status_credit_changes_alert_webhooks

Organizations carry the tax status platform finance verified (checkout prices by it); credit
line changes are requested and, above the approval threshold, approved by a second person;
budget alert webhooks remember their secret's age and each alert's delivery attempts.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 16:50:00
"""

from alembic import op
import sqlalchemy as sa

from market.db import UTCDateTime


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('organizations') as batch:
        batch.add_column(sa.Column('tax_status', sa.String(length=16), nullable=False,
                                   server_default='general'))
        batch.add_column(sa.Column('tax_status_evidence', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('tax_status_verified_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('tax_status_verified_by_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f('fk_organizations_tax_status_verified_by_id_users'),
                                 'users', ['tax_status_verified_by_id'], ['id'])
        batch.create_check_constraint(
            batch.f('ck_organizations_tax_status_known'),
            "tax_status IN ('general', 'small_scale', 'exempt')")

    op.create_table(
        'credit_line_changes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organization_id', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('credit_line_id', sa.Integer(), nullable=True),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('limit_minor', sa.BigInteger(), nullable=False),
        sa.Column('limit_before_minor', sa.BigInteger(), nullable=True),
        sa.Column('payment_method', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.String(length=500), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('requested_by_id', sa.Integer(), nullable=True),
        sa.Column('requested_at', UTCDateTime(), nullable=False),
        sa.Column('decided_by_id', sa.Integer(), nullable=True),
        sa.Column('decided_at', UTCDateTime(), nullable=True),
        sa.Column('decision_note', sa.String(length=500), nullable=True),
        sa.CheckConstraint("kind IN ('open', 'change', 'close')",
                           name=op.f('ck_credit_line_changes_kind_known')),
        sa.CheckConstraint("status IN ('pending', 'applied', 'rejected')",
                           name=op.f('ck_credit_line_changes_status_known')),
        sa.CheckConstraint('limit_minor >= 0',
                           name=op.f('ck_credit_line_changes_limit_not_negative')),
        sa.ForeignKeyConstraint(['credit_line_id'], ['credit_lines.id'],
                                name=op.f('fk_credit_line_changes_credit_line_id_credit_lines')),
        sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'],
                                name=op.f('fk_credit_line_changes_decided_by_id_users')),
        sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'],
                                name=op.f('fk_credit_line_changes_organization_id_organizations')),
        sa.ForeignKeyConstraint(['requested_by_id'], ['users.id'],
                                name=op.f('fk_credit_line_changes_requested_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_line_changes')),
    )
    op.create_index(op.f('ix_credit_line_changes_organization_id'), 'credit_line_changes',
                    ['organization_id'])
    op.create_index(op.f('ix_credit_line_changes_credit_line_id'), 'credit_line_changes',
                    ['credit_line_id'])
    op.create_index(op.f('ix_credit_line_changes_status'), 'credit_line_changes', ['status'])

    with op.batch_alter_table('budgets') as batch:
        batch.add_column(sa.Column('webhook_secret_created_at', UTCDateTime(), nullable=True))
    with op.batch_alter_table('budget_alerts') as batch:
        batch.add_column(sa.Column('webhook_attempts', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('webhook_next_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('webhook_error', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('budget_alerts') as batch:
        batch.drop_column('webhook_error')
        batch.drop_column('webhook_next_at')
        batch.drop_column('webhook_attempts')
    with op.batch_alter_table('budgets') as batch:
        batch.drop_column('webhook_secret_created_at')
    op.drop_index(op.f('ix_credit_line_changes_status'), table_name='credit_line_changes')
    op.drop_index(op.f('ix_credit_line_changes_credit_line_id'), table_name='credit_line_changes')
    op.drop_index(op.f('ix_credit_line_changes_organization_id'),
                  table_name='credit_line_changes')
    op.drop_table('credit_line_changes')
    with op.batch_alter_table('organizations') as batch:
        batch.drop_constraint(batch.f('ck_organizations_tax_status_known'), type_='check')
        batch.drop_constraint(batch.f('fk_organizations_tax_status_verified_by_id_users'),
                              type_='foreignkey')
        batch.drop_column('tax_status_verified_by_id')
        batch.drop_column('tax_status_verified_at')
        batch.drop_column('tax_status_evidence')
        batch.drop_column('tax_status')
