"""upload_failures

An upload whose assembled content is not the declared SHA-256 ends ``failed``, with the reason,
instead of staying ``pending``: its parts are gone and it can never complete. An upload left
pending past the abandon age ends ``expired`` (its parts freed in the store).

Revision ID: 0022
Revises: 0018
Create Date: 2026-12-08 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0018'
branch_labels = None
depends_on = None

OLD = "status IN ('pending', 'completed', 'aborted')"
NEW = "status IN ('pending', 'completed', 'aborted', 'failed', 'expired')"


def upgrade() -> None:
    with op.batch_alter_table('uploads') as batch:
        batch.add_column(sa.Column('failure', sa.Text(), nullable=True))
        batch.drop_constraint(batch.f('ck_uploads_status_known'), type_='check')
        batch.create_check_constraint(batch.f('ck_uploads_status_known'), NEW)
        batch.create_index('ix_uploads_status_created_at', ['status', 'created_at'])


def downgrade() -> None:
    op.execute("UPDATE uploads SET status = 'aborted' WHERE status IN ('failed', 'expired')")
    with op.batch_alter_table('uploads') as batch:
        batch.drop_index('ix_uploads_status_created_at')
        batch.drop_constraint(batch.f('ck_uploads_status_known'), type_='check')
        batch.create_check_constraint(batch.f('ck_uploads_status_known'), OLD)
        batch.drop_column('failure')
