"""uploads_and_version_files

Files arrive in resumable uploads (one row each, from start to completion or abort); a version
of files lists them in version_files, one row per manifest entry, with the object that holds
its bytes and the facts its tokens were counted from.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 09:00:00
"""

from alembic import op
import sqlalchemy as sa

from market.db import UTCDateTime


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'uploads',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('organization_id', sa.Integer(), nullable=False),
        sa.Column('dataset_id', sa.Integer(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('media_type', sa.String(length=255), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('expected_sha256', sa.String(length=64), nullable=False),
        sa.Column('token_profile', sa.String(length=64), nullable=False),
        sa.Column('store_upload_id', sa.String(length=1024), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('object_key', sa.String(length=100), nullable=True),
        sa.Column('tokens', sa.BigInteger(), nullable=True),
        sa.Column('basis', sa.JSON(), nullable=True),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('completed_at', UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'completed', 'aborted')",
                           name=op.f('ck_uploads_status_known')),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'],
                                name=op.f('fk_uploads_created_by_id_users')),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'],
                                name=op.f('fk_uploads_dataset_id_datasets')),
        sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'],
                                name=op.f('fk_uploads_organization_id_organizations')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_uploads')),
    )
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uploads_dataset_id'), ['dataset_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_uploads_organization_id'), ['organization_id'],
                              unique=False)

    op.create_table(
        'version_files',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('media_type', sa.String(length=255), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('object_key', sa.String(length=100), nullable=False),
        sa.Column('tokens', sa.BigInteger(), nullable=False),
        sa.Column('token_profile', sa.String(length=64), nullable=False),
        sa.Column('basis', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['version_id'], ['dataset_versions.id'], ondelete='CASCADE',
                                name=op.f('fk_version_files_version_id_dataset_versions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_version_files')),
        sa.UniqueConstraint('version_id', 'path', name=op.f('uq_version_files_version_id_path')),
        sa.UniqueConstraint('version_id', 'position',
                            name=op.f('uq_version_files_version_id_position')),
    )


def downgrade() -> None:
    op.drop_table('version_files')
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_uploads_organization_id'))
        batch_op.drop_index(batch_op.f('ix_uploads_dataset_id'))
    op.drop_table('uploads')
