"""The application factory."""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask, current_app, request, session
from flask_babel import Babel, get_locale
from flask_wtf.csrf import CSRFProtect

from billing.context import BillingSettings
from billing.gateways import gateway_from_settings
from market import web
from market.ratelimit import limiter_from_settings
from market.accounts.passwords import Passwords
from market.config import load_config
from market.db import Database

LOCALES = ("zh_CN", "en")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, database handle, extensions, blueprints and commands.

    It never touches the schema: ``flask db upgrade`` does.
    """
    app = Flask("market", instance_relative_config=True)
    app.config.update(load_config(app.instance_path, overrides=config))

    app.extensions["market.db"] = Database(app.config["DATABASE_URL"])
    # The payment gateway is held by the app, never set as module state: None means bank
    # transfer only (the embedded default); a Stripe key turns card payments on.
    app.extensions["market.gateway"] = gateway_from_settings(app.config)
    app.extensions["market.billing"] = BillingSettings.from_settings(app.config)
    app.extensions["market.ratelimiter"] = limiter_from_settings(app.config)
    app.extensions["market.passwords"] = Passwords(
        time_cost=app.config["PASSWORD_TIME_COST"], memory_kib=app.config["PASSWORD_MEMORY_KIB"])

    # Registered before CSRFProtect, whose check reads the form: a dataset upload may be larger
    # than an ordinary request.
    app.before_request(_allow_large_uploads)
    csrf = CSRFProtect(app)
    Babel(app, locale_selector=_select_locale)
    app.jinja_env.globals["get_locale"] = get_locale
    # Babel reads zh_CN as zh_Hans_CN: pages ask for the language, not the locale's spelling.
    app.jinja_env.globals["is_zh"] = lambda: get_locale().language == "zh"
    web.init_app(app)

    from market.api import api
    from market.storefront import storefront

    from market.hooks import hooks

    csrf.exempt(api)  # the API checks its own: keys need none, sessions send X-CSRFToken
    csrf.exempt(hooks)  # a gateway's callback proves itself by its signature
    app.register_blueprint(api)
    app.register_blueprint(hooks)
    app.register_blueprint(storefront)

    from market.cli import register_commands

    register_commands(app)
    return app


def _allow_large_uploads() -> None:
    from market.storefront.catalog_views import UPLOAD_ENDPOINTS

    if request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = current_app.config["IMPORT_MAX_BYTES"]


def _select_locale() -> str:
    chosen = session.get("locale")
    if chosen in LOCALES:
        return chosen
    match = request.accept_languages.best_match(["zh_CN", "zh", "en"])
    if match is None:
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    return "zh_CN" if match == "zh" else match
