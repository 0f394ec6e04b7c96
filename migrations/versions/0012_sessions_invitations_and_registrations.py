"""sessions_invitations_and_registrations

Server-side sessions of signed-in people (a sign-out or a password change ends them at once),
invitations to join an organization (the invitee accepts), and registrations waiting for their
e-mail to be confirmed.
The failed sign-ins table goes: throttling now keeps its counts in the rate-limit store.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 16:50:00
"""

from alembic import op
import sqlalchemy as sa

from market.db import UTCDateTime


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'user_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('ended_at', UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_user_sessions_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_user_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_user_sessions_token_hash')),
    )
    with op.batch_alter_table('user_sessions') as batch:
        batch.create_index(batch.f('ix_user_sessions_user_id'), ['user_id'])

    op.create_table(
        'invitations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organization_id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('invited_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('accepted_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('accepted_by_id', sa.Integer(), nullable=True),
        sa.Column('revoked_at', UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('owner', 'member', 'finance', 'reviewer')",
                           name=op.f('ck_invitations_role_known')),
        sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'],
                                name=op.f('fk_invitations_organization_id_organizations'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['invited_by_id'], ['users.id'],
                                name=op.f('fk_invitations_invited_by_id_users'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['accepted_by_id'], ['users.id'],
                                name=op.f('fk_invitations_accepted_by_id_users'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_invitations')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_invitations_token_hash')),
    )
    with op.batch_alter_table('invitations') as batch:
        batch.create_index(batch.f('ix_invitations_organization_id'), ['organization_id'])

    op.create_table(
        'pending_registrations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('password_hash', sa.String(length=255), nullable=False),
        sa.Column('organization_name', sa.String(length=200), nullable=False),
        sa.Column('roles', sa.JSON(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('completed_at', UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_registrations')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_pending_registrations_token_hash')),
    )
    with op.batch_alter_table('pending_registrations') as batch:
        batch.create_index(batch.f('ix_pending_registrations_email'), ['email'])

    with op.batch_alter_table('login_attempts') as batch:
        batch.drop_index(batch.f('ix_login_attempts_remote_addr'))
        batch.drop_index(batch.f('ix_login_attempts_email'))
        batch.drop_index(batch.f('ix_login_attempts_attempted_at'))
    op.drop_table('login_attempts')


def downgrade() -> None:
    op.create_table(
        'login_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('remote_addr', sa.String(length=64), nullable=False),
        sa.Column('attempted_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempts')),
    )
    with op.batch_alter_table('login_attempts') as batch:
        batch.create_index(batch.f('ix_login_attempts_attempted_at'), ['attempted_at'])
        batch.create_index(batch.f('ix_login_attempts_email'), ['email'])
        batch.create_index(batch.f('ix_login_attempts_remote_addr'), ['remote_addr'])

    with op.batch_alter_table('pending_registrations') as batch:
        batch.drop_index(batch.f('ix_pending_registrations_email'))
    op.drop_table('pending_registrations')
    with op.batch_alter_table('invitations') as batch:
        batch.drop_index(batch.f('ix_invitations_organization_id'))
    op.drop_table('invitations')
    with op.batch_alter_table('user_sessions') as batch:
        batch.drop_index(batch.f('ix_user_sessions_user_id'))
    op.drop_table('user_sessions')
