"""The WSGI entry point: ``gunicorn wsgi:app``."""

from market.web.app import create_app

app = create_app()
