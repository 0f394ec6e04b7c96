"""The application factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flask import Flask, current_app, redirect, request, session, url_for
from flask_babel import Babel, get_locale
from flask_wtf.csrf import CSRFProtect, validate_csrf
from wtforms import ValidationError as CSRFError

from billing.context import BillingSettings
from billing.payments.gateway import gateway_from_settings
from market.web import boundary, http as web
from market.accounts.authz import authorize
from market.accounts.mail import mailer_from_settings
from market.accounts.passwords import Passwords
from market.accounts.throttle import LoginThrottle
from market.core.objects import store_from_settings
from market.core.settings import load_config
from market.core.db import Database
from market.web.formatting import format_money, format_share
from market.web.api import api
from market.web.cli.market import register_commands
from market.web.hooks import hooks
from market.web.ratelimit import limiter_from_settings
from market.web.storefront import storefront, storefront_json
from pricing.periods import BusinessCalendar

LOCALES = ("zh_CN", "en")


# Templates, static files and translations live beside this module, in market/web.
WEB_ROOT = Path(__file__).resolve().parent


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, database handle, extensions, blueprints and commands.

    It never touches the schema: ``flask db upgrade`` does.
    """
    app = Flask("market", root_path=str(WEB_ROOT), instance_relative_config=True)
    app.config.update(load_config(app.instance_path, overrides=config))

    app.extensions["market.db"] = Database(
        app.config["DATABASE_URL"], calendar=BusinessCalendar(app.config["BUSINESS_TIMEZONE"]))
    # The payment gateway is held by the app, never set as module state: None means bank
    # transfer only (the embedded default); a Stripe key turns card payments on.
    app.extensions["market.gateway"] = gateway_from_settings(app.config)
    # Dataset files: a local directory (the embedded default) or an S3-compatible bucket.
    app.extensions["market.objects"] = store_from_settings(app.config)
    app.extensions["market.billing"] = BillingSettings.from_settings(app.config)
    app.extensions["market.ratelimiter"] = limiter_from_settings(app.config)
    app.extensions["market.login_throttle"] = LoginThrottle.from_settings(app.config)
    app.extensions["market.mailer"] = mailer_from_settings(app.config)
    app.extensions["market.passwords"] = Passwords(
        time_cost=app.config["PASSWORD_TIME_COST"], memory_kib=app.config["PASSWORD_MEMORY_KIB"])

    # Registered before CSRFProtect, whose check reads the form: sign-in and the CSRF header are
    # checked first, then a dataset upload may be larger than an ordinary request.
    app.before_request(_allow_large_uploads)
    csrf = CSRFProtect(app)
    Babel(app, locale_selector=_select_locale)
    app.jinja_env.globals["get_locale"] = get_locale
    # Babel reads zh_CN as zh_Hans_CN: pages ask for the language, not the locale's spelling.
    app.jinja_env.globals["is_zh"] = lambda: get_locale().language == "zh"
    app.add_template_filter(format_money, "money")
    app.add_template_filter(format_share, "share")
    web.init_app(app)
    boundary.init_app(app)

    csrf.exempt(api)  # the API checks its own: keys need none, sessions send X-CSRFToken
    csrf.exempt(hooks)  # a gateway's callback proves itself by its signature
    # The pages' JSON routes check X-CSRFToken themselves, answering problem+json naming it.
    csrf.exempt(storefront_json)
    app.register_blueprint(api)
    app.register_blueprint(hooks)
    app.register_blueprint(storefront)
    app.register_blueprint(storefront_json)

    register_commands(app)
    return app


def _allow_large_uploads():
    """A dataset upload may be as large as IMPORT_MAX_BYTES, but only for a signed-in person who
    may write to the catalogue and whose request carries a valid CSRF token in its header (the
    upload page's script sends one). Anyone else is answered before a byte of the body is read:
    the anonymous by the sign-in redirect, a person without the permission by 403, and a
    request without the header keeps the ordinary MAX_CONTENT_LENGTH."""
    from market.web.storefront.catalog_views import UPLOAD_ENDPOINTS

    if request.endpoint not in UPLOAD_ENDPOINTS:
        return None
    principal = web.session_principal()
    if principal is None:
        return redirect(url_for("storefront.login", next=request.full_path))
    authorize(principal, "catalog:write")
    token = request.headers.get("X-CSRFToken")
    if token:
        try:
            validate_csrf(token)
        except CSRFError:
            return None  # CSRFProtect answers it, within the ordinary limit
        request.max_content_length = current_app.config["IMPORT_MAX_BYTES"]
    return None


def _select_locale() -> str:
    chosen = session.get("locale")
    if chosen in LOCALES:
        return chosen
    match = request.accept_languages.best_match(["zh_CN", "zh", "en"])
    if match is None:
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    return "zh_CN" if match == "zh" else match
