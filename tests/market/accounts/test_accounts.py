"""Registration, sign-in and sign-out through the storefront's forms."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from market.accounts.mail import Outbox
from market.accounts.models import Membership, Organization, User
from market.core.audit import AuditEntry
from tests.factories import PASSWORD, english_client, make_org, make_user
from tests.fixtures import csrf_token

GOOD = {"name": "Liu Yang", "email": "Liu.Yang@Example.com", "password": "amber-river-ledger",
        "organization_name": "Northwind Grid", "roles": ["buyer", "supplier"]}


CSRF_VALUE = re.compile(r'name="csrf_token" type="hidden" value="[^"]+"')


def _register(client, **changes):
    form = GOOD | changes | {"csrf_token": csrf_token(client, "/register")}
    return client.post("/register", data=form)


@pytest.fixture()
def outbox(app, monkeypatch):
    """The mail the app sends, kept instead of sent."""
    box = Outbox()
    monkeypatch.setitem(app.extensions, "market.mailer", box)
    return box


def _link(mail) -> str:
    return re.search(r"http://localhost(/register/confirm/[\w-]+)", mail.body).group(1)


def test_registration_creates_person_organization_and_owner_membership(client, session, outbox):
    response = _register(client)
    assert response.status_code == 200 and "Check your inbox" in response.get_data(as_text=True)
    # Nothing exists until the address's holder opens the mailed link.
    assert session.scalar(select(User).where(User.email == "liu.yang@example.com")) is None
    (mail,) = outbox.sent
    assert mail.to == "liu.yang@example.com"
    link = _link(mail)
    page = client.get(link)
    assert page.status_code == 200 and "Northwind Grid" in page.get_data(as_text=True)
    assert session.scalar(select(User).where(User.email == "liu.yang@example.com")) is None
    response = client.post(link, data={"csrf_token": csrf_token(client, link)})
    assert response.status_code == 302 and response.location.endswith("/account")
    user = session.scalar(select(User).where(User.email == "liu.yang@example.com"))
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert "amber-river-ledger" not in user.password_hash
    (membership,) = user.memberships
    assert membership.role == "owner"
    assert membership.organization.role_names == ["buyer", "supplier"]
    assert session.scalar(select(AuditEntry.action).where(
        AuditEntry.object_id == str(user.id))) == "account.registered"
    assert client.get("/account").status_code == 200
    # The link works once.
    assert client.get(link).status_code == 404


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("changes, field, message", [
    ({"password": "short1"}, "password", "at least 10"),
    ({"password": "1234567890"}, "password", "too easy"),
    ({"password": "liu.yang-2026!"}, "password", "e-mail name"),
    ({"email": "not-an-email"}, "email", "Invalid email"),
    ({"roles": []}, "roles", "required"),
    ({"roles": ["exchange"]}, "roles", "not a valid choice"),
])
def test_bad_registration_names_the_field_and_writes_nothing(client, session, changes, field,
                                                             message):
    before = (_count(session, User), _count(session, Organization))
    response = _register(client, **changes)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f'id="{field}-errors"' in page and message in page
    assert (_count(session, User), _count(session, Organization)) == before


def test_registering_a_known_email_answers_as_a_new_one(app, session, passwords, outbox):
    """Finding 9: registration answered "already registered" to anyone who asked."""
    make_user(session, passwords, make_org(session), email="known.person@example.com")
    session.commit()
    before = _count(session, Organization)
    pages = []
    for email in ("known.person@example.com", "unknown.person@example.com"):
        response = _register(english_client(app), email=email)
        page = response.get_data(as_text=True).replace(email, "EMAIL")
        pages.append((response.status_code, CSRF_VALUE.sub("", page)))  # per-session token
    assert pages[0] == pages[1] and pages[0][0] == 200
    assert "already" not in pages[0][1]
    # Only the holder of the address learns which it was, by mail.
    note, link = outbox.sent
    assert note.to == "known.person@example.com" and "already has an account" in note.body
    assert "/register/confirm/" not in note.body
    assert link.to == "unknown.person@example.com" and "/register/confirm/" in link.body
    assert _count(session, Organization) == before


def test_a_link_for_an_address_registered_meanwhile_creates_nothing(client, session, passwords,
                                                                    outbox):
    _register(client)
    _register(client)  # twice, before either link is opened
    first, second = (_link(mail) for mail in outbox.sent)
    assert client.post(first, data={"csrf_token": csrf_token(client, first)}).status_code == 302
    other = english_client(client.application)
    response = other.post(second, data={"csrf_token": csrf_token(other, second)})
    assert response.status_code == 302 and response.location.endswith("/login")
    assert _count(session, Organization) == 1


def test_forms_without_csrf_token_are_refused(client, session):
    response = client.post("/register", data=GOOD)
    assert response.status_code == 400
    assert _count(session, User) == 0


def test_sign_in_and_out(client, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    response = client.post("/login", data={"email": user.email.upper(), "password": PASSWORD,
                                           "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie
    assert client.get("/account").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    assert client.get("/account").status_code == 302


@pytest.mark.parametrize("query", [
    "next=//evil.example/x",
    "next=/%09/evil.example/x",  # the browser drops the tab: //evil.example/x
    "next=/%0a/evil.example/x",
    "next=%09//evil.example/x",
    "next=/%5Cevil.example/x",  # a backslash reads as a slash
    "next=%5C%5Cevil.example/x",
    "next=https://evil.example/x",
    "next=https:evil.example",
    "next=javascript:alert(1)",
    "next=/%252F%252Fevil.example/x",  # encoded twice
    "next=/%2F%2Fevil.example/x",
    "next=/%255Cevil.example",
    "next=/%2509/evil.example",
    "next=evil.example",
    "next=",
])
def test_sign_in_redirects_only_within_the_site(client, session, passwords, query):
    """Finding 6: ``next=/%09/evil.example/x`` bounced the user to ``//evil.example/x``."""
    user = make_user(session, passwords, make_org(session))
    session.commit()
    token = csrf_token(client, "/login")
    response = client.post(f"/login?{query}",
                           data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert response.location == "/account"


def test_a_next_with_nul_is_refused_before_signing_in(client, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    token = csrf_token(client, "/login")
    response = client.post("/login?next=/account%00",
                           data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 422 and b"next" in response.data
    assert client.get("/account").status_code == 302  # not signed in


@pytest.mark.parametrize("target", ["/account/keys", "/datasets?q=grid%20load&page=2",
                                    "/orders/3#lines"])
def test_sign_in_returns_to_a_page_of_the_site(client, session, passwords, target):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    token = csrf_token(client, "/login")
    response = client.post("/login", query_string={"next": target},
                           data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302 and response.location == target


def _try(client, email, password):
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": csrf_token(client, "/login")})


def _from(app, address: str):
    client = english_client(app)
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_failed_sign_ins_slow_that_address_down(app, connection, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    attacker = _from(app, "203.0.113.9")
    for _ in range(app.config["LOGIN_FREE_FAILURES"]):
        assert _try(attacker, user.email, "wrong-guess-1").status_code == 401
    # From there, even the right password waits: a guesser learns nothing while throttled.
    response = _try(attacker, user.email, PASSWORD)
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= app.config["LOGIN_BACKOFF_SECONDS"]
    assert "Too many failed sign-ins" in response.get_data(as_text=True)


def test_an_attacker_never_locks_the_owner_out(app, connection, session, passwords):
    """Finding 9: five wrong passwords from anywhere locked the e-mail for 15 minutes."""
    user = make_user(session, passwords, make_org(session))
    session.commit()
    attacker = _from(app, "203.0.113.9")
    for _ in range(app.config["LOGIN_FREE_FAILURES"] + 3):
        assert _try(attacker, user.email, "wrong-guess-1").status_code in (401, 429)
    assert _try(attacker, user.email, PASSWORD).status_code == 429
    owner = _from(app, "198.51.100.7")
    response = _try(owner, user.email, PASSWORD)
    assert response.status_code == 302 and response.location == "/account"


def test_a_success_starts_the_count_afresh(app, connection, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    owner = _from(app, "198.51.100.7")
    free = app.config["LOGIN_FREE_FAILURES"]
    for _ in range(free - 1):
        assert _try(owner, user.email, "typo-in-password").status_code == 401
    assert _try(owner, user.email, PASSWORD).status_code == 302
    for _ in range(free - 1):  # the earlier typos no longer count
        assert _try(owner, user.email, "typo-in-password").status_code == 401
    assert _try(owner, user.email, PASSWORD).status_code == 302


def test_unknown_email_and_wrong_password_answer_alike(client, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    pages = []
    for email in (user.email, "nobody@example.com"):
        response = client.post("/login", data={"email": email, "password": "wrong-guess-1",
                                               "csrf_token": csrf_token(client, "/login")})
        pages.append((response.status_code, "Wrong e-mail or password" in response.get_data(
            as_text=True)))
    assert pages == [(401, True), (401, True)]


def test_pages_need_sign_in(client):
    response = client.get("/account/keys")
    assert response.status_code == 302 and "/login" in response.location


def test_member_cannot_open_owner_pages(sign_in_as, org):
    assert sign_in_as(org, "member").get("/account/keys").status_code == 403


def test_membership_role_is_checked_by_the_database(session, passwords):
    from sqlalchemy.exc import IntegrityError

    org = make_org(session)
    user = make_user(session, passwords)
    session.add(Membership(user=user, organization=org, role="emperor"))
    with pytest.raises(IntegrityError):
        session.flush()


API_ACCOUNT = {"name": "Gao Feng", "email": "gao.feng@example.com",
               "password": "violet-harbor-engine", "organization_name": "Gao Data",
               "roles": ["buyer"]}


def _api_token(mail) -> str:
    return re.search(r"/register/confirm/([\w-]+)", mail.body).group(1)


def test_registration_through_the_api(client, session, outbox):
    response = client.post("/api/v1/accounts", json=API_ACCOUNT)
    assert response.status_code == 202, response.get_json()
    assert response.get_json() == {"email": "gao.feng@example.com",
                                   "status": "confirmation_sent"}
    assert _count(session, User) == 0
    response = client.post("/api/v1/accounts/confirm", json={"token": _api_token(outbox.sent[0])})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["organization"]["roles"] == ["buyer"] and "password" not in body
    assert session.scalar(select(User.password_hash).where(
        User.email == "gao.feng@example.com")).startswith("$argon2id$")
    again = client.post("/api/v1/accounts/confirm", json={"token": _api_token(outbox.sent[0])})
    assert again.status_code == 404 and again.mimetype == "application/problem+json"


@pytest.mark.parametrize("changes, status, field", [
    ({"password": "short"}, 422, "password"),
    ({"email": "nope"}, 422, "email"),
    ({"roles": ["exchange"]}, 422, "roles"),
    ({"is_admin": True}, 422, "is_admin"),
])
def test_bad_api_registrations_name_the_field_and_write_nothing(client, session, changes,
                                                                status, field):
    response = client.post("/api/v1/accounts", json=API_ACCOUNT | changes)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert _count(session, User) == 0 and _count(session, Organization) == 0


def test_a_known_email_through_the_api_gets_the_same_answer(client, session, outbox):
    assert client.post("/api/v1/accounts", json=API_ACCOUNT).status_code == 202
    client.post("/api/v1/accounts/confirm", json={"token": _api_token(outbox.sent[0])})
    again = client.post("/api/v1/accounts", json=API_ACCOUNT | {"email": "GAO.FENG@example.com",
                                                                 "organization_name": "Other"})
    assert again.status_code == 202
    assert again.get_json() == {"email": "gao.feng@example.com", "status": "confirmation_sent"}
    assert "already has an account" in outbox.sent[-1].body
    assert _count(session, Organization) == 1


def test_a_lost_race_answers_409_and_writes_nothing(client, session, monkeypatch, outbox):
    """Two confirmations of one e-mail pass the check at once; the database stops the second."""
    from market.accounts import services

    for organization in ("Gao Data", "Twin"):
        client.post("/api/v1/accounts", json=API_ACCOUNT | {"organization_name": organization})
    first, second = (_api_token(mail) for mail in outbox.sent)
    assert client.post("/api/v1/accounts/confirm", json={"token": first}).status_code == 201
    real_scalar = session.__class__.scalar

    def no_duplicate_seen(self, statement, *args, **kwargs):
        if "users.email" in str(statement) and "users.id" in str(statement):
            return None  # as if the other registration had not committed yet
        return real_scalar(self, statement, *args, **kwargs)

    monkeypatch.setattr(services.Session, "scalar", no_duplicate_seen)
    response = client.post("/api/v1/accounts/confirm", json={"token": second})
    monkeypatch.undo()
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    assert _count(session, Organization) == 1
