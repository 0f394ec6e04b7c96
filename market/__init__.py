"""The data marketplace's Flask application.

``create_app`` is imported lazily so that the domain packages below the web layer
(``market.db``, ``market.accounts``, ``market.catalog``) can be imported without Flask.
"""


def create_app(config=None):
    """Build the WSGI application; ``config`` overrides settings read from the environment."""
    from market.app import create_app as build

    return build(config)
