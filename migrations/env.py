"""Alembic environment: runs migrations on the connection or URL that market.web.schema passes."""

from alembic import context

from market.core.db import make_engine
from market.web.schema import metadata

config = context.config


def run_migrations(connection) -> None:
    # Batch mode lets ALTER work on SQLite (it rebuilds the table); PostgreSQL alters in place.
    context.configure(connection=connection, target_metadata=metadata(), compare_type=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            run_migrations(conn)
    finally:
        engine.dispose()
