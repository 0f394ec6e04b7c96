"""The application shell: settings, problem+json errors, request limits, security headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market.web.app import create_app
from market.core.settings import SETTINGS, load_config


def test_settings_come_from_the_environment_given(tmp_path):
    config = load_config(tmp_path, environ={"DATABASE_URL": "sqlite:///x.db",
                                            "LOGIN_FREE_FAILURES": "7",
                                            "SESSION_COOKIE_SECURE": "false"})
    assert config["DATABASE_URL"] == "sqlite:///x.db"
    assert config["LOGIN_FREE_FAILURES"] == 7
    assert config["SESSION_COOKIE_SECURE"] is False


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    config = load_config(tmp_path, environ={})
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'market.db'}"
    # A development secret is generated once and kept.
    assert load_config(tmp_path, environ={})["SECRET_KEY"] == config["SECRET_KEY"]


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATABASE_URL", "PLATFORM_SIGNING_KEY"])
def test_production_refuses_to_start_without_its_secrets(tmp_path, missing):
    environ = {"MARKET_ENV": "production", "SECRET_KEY": "s", "DATABASE_URL": "sqlite://",
               "PLATFORM_SIGNING_KEY": "/etc/market/signing_key.pem"}
    del environ[missing]
    with pytest.raises(RuntimeError, match=missing):
        load_config(tmp_path, environ=environ)


def test_a_bad_setting_is_named(tmp_path):
    with pytest.raises(RuntimeError, match="LOGIN_FREE_FAILURES"):
        load_config(tmp_path, environ={"LOGIN_FREE_FAILURES": "many"})


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert not missing


def test_the_factory_touches_no_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    create_app({"DATABASE_URL": url, "SECRET_KEY": "x"})
    assert not (tmp_path / "never.db").exists()


def test_security_headers_on_pages_and_api(client):
    for path in ("/", "/api/v1/health"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"


def _problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["type"]
    return body


def test_unknown_api_path_is_a_problem(client):
    _problem(client.get("/api/v1/nothing-here"), 404)


def test_wrong_content_type_is_415_naming_the_header(owner_client):
    response = owner_client.post("/api/v1/keys", data="name=x",
                                 content_type="application/x-www-form-urlencoded",
                                 headers=_csrf(owner_client))
    assert _problem(response, 415)["errors"] == {
        "Content-Type": ["Expected application/json, got application/x-www-form-urlencoded."]}


def test_malformed_json_is_400(owner_client):
    response = owner_client.post("/api/v1/keys", data='{"name": ', content_type="application/json",
                                 headers=_csrf(owner_client))
    assert "_body" in _problem(response, 400)["errors"]


def test_unknown_fields_are_rejected_and_nothing_is_written(owner_client, session):
    from market.accounts.models import ApiKey

    response = owner_client.post("/api/v1/keys", json={
        "name": "k", "scopes": ["catalog:read"], "organization_id": 999, "secret_hash": "x"},
        headers=_csrf(owner_client))
    errors = _problem(response, 422)["errors"]
    assert errors == {"organization_id": ["Unknown field."], "secret_hash": ["Unknown field."]}
    assert session.query(ApiKey).count() == 0


def test_oversized_body_is_413(app, owner_client):
    app.config["MAX_CONTENT_LENGTH"], before = 1024, app.config["MAX_CONTENT_LENGTH"]
    try:
        response = owner_client.post("/api/v1/keys", data=json.dumps({"name": "x" * 4096}),
                                     content_type="application/json",
                                     headers=_csrf(owner_client))
    finally:
        app.config["MAX_CONTENT_LENGTH"] = before
    _problem(response, 413)


def test_html_errors_are_pages(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and response.mimetype == "text/html"


def _csrf(client):
    from tests.fixtures import csrf_token

    return {"X-CSRFToken": csrf_token(client)}


def test_a_body_over_the_limit_on_a_page_is_413(app, client, monkeypatch):
    """Finding 11: the error page read the oversized form again and answered 500."""
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 1000)
    response = client.post("/login", data={"email": "a@example.com", "password": "x" * 5000})
    assert response.status_code == 413 and response.mimetype == "text/html"


def test_a_cursor_far_beyond_any_page_names_the_field(client):
    """Finding 11: a catalogue cursor with offset 10**30 answered 500."""
    import base64

    cursor = base64.urlsafe_b64encode(b'{"o": 1000000000000000000000000000000}').decode()
    response = client.get("/catalog", query_string={"cursor": cursor})
    assert response.status_code == 422 and "cursor" in response.get_data(as_text=True)
