"""The marketplace: ``market.core`` (database, errors, audit, settings), ``market.accounts``,
``market.catalog`` and, above billing, ``market.web`` (the Flask application: ``create_app`` in
``market.web.app``)."""
