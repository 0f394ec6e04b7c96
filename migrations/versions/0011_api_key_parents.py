"""api_key_parents

API keys remember the key that created them, if a key did: revoking it revokes the keys it made.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:40:00
"""

from alembic import op
import sqlalchemy as sa

from market.db import UTCDateTime


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('parent_key_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f('fk_api_keys_parent_key_id_api_keys'), 'api_keys',
                                 ['parent_key_id'], ['id'])
        batch.create_index(batch.f('ix_api_keys_parent_key_id'), ['parent_key_id'])


def downgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_index(batch.f('ix_api_keys_parent_key_id'))
        batch.drop_constraint(batch.f('fk_api_keys_parent_key_id_api_keys'), type_='foreignkey')
        batch.drop_column('parent_key_id')
