"""Membership by invitation: an owner invites an e-mail address, the person accepts."""

from __future__ import annotations

import re

from sqlalchemy import select

from market.accounts.models import Invitation, Membership
from tests.factories import PASSWORD, english_client, make_org, make_user
from tests.fixtures import csrf_token


def _invite(owner_client, org, email, role="finance"):
    return owner_client.post(f"/api/v1/organizations/{org.id}/invitations",
                             json={"email": email, "role": role},
                             headers={"X-CSRFToken": csrf_token(owner_client)})


def _signed_in(app, email):
    client = english_client(app)
    response = client.post("/login", data={"email": email, "password": PASSWORD,
                                           "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 302
    return client


def _token(accept_url: str) -> str:
    return accept_url.rsplit("/", 1)[1]


def test_inviting_never_tells_who_is_registered(owner_client, org, session, passwords):
    """Finding 9: adding a member answered with the person's name, or 422 for an unknown
    e-mail, and made them a member without their consent."""
    person = make_user(session, passwords, make_org(session), email="li.na@example.com")
    session.commit()
    known = _invite(owner_client, org, "Li.Na@example.com")
    unknown = _invite(owner_client, org, "nobody.here@example.com")
    assert known.status_code == unknown.status_code == 201
    bodies = [known.get_json(), unknown.get_json()]
    assert bodies[0].keys() == bodies[1].keys()
    for body in bodies:
        assert body["status"] == "pending" and body["role"] == "finance"
        assert person.name not in str(body) and "user_id" not in body
    assert bodies[0]["email"] == "li.na@example.com"
    # Nobody joined: the invitee has not accepted.
    assert session.scalar(select(Membership).where(
        Membership.user_id == person.id, Membership.organization_id == org.id)) is None
    # The old call that added anyone at once is gone.
    gone = owner_client.post(f"/api/v1/organizations/{org.id}/members",
                             json={"email": person.email, "role": "owner"},
                             headers={"X-CSRFToken": csrf_token(owner_client)})
    assert gone.status_code in (404, 405)


def test_the_invitee_accepts_signed_in(app, owner_client, org, session, passwords):
    person = make_user(session, passwords, make_org(session), email="li.na@example.com")
    session.commit()
    link = _invite(owner_client, org, person.email).get_json()["accept_url"]
    path = "/invitations/" + _token(link)

    anonymous = english_client(app)
    response = anonymous.get(path)
    assert response.status_code == 302 and "/login" in response.location

    invitee = _signed_in(app, person.email)
    page = invitee.get(path).get_data(as_text=True)
    assert org.name in page and "finance" in page
    response = invitee.post(path, data={"csrf_token": csrf_token(invitee, path)})
    assert response.status_code == 302
    membership = session.scalar(select(Membership).where(
        Membership.user_id == person.id, Membership.organization_id == org.id))
    assert membership.role == "finance"
    assert org.name in invitee.get("/account").get_data(as_text=True)  # now acting for it
    # A link works once.
    assert invitee.get(path).status_code == 404


def test_only_the_invited_email_can_accept(app, owner_client, org, session, passwords):
    make_user(session, passwords, make_org(session), email="li.na@example.com")
    other = make_user(session, passwords, make_org(session), email="someone.else@example.com")
    session.commit()
    link = _invite(owner_client, org, "li.na@example.com", role="owner").get_json()["accept_url"]
    path = "/invitations/" + _token(link)
    intruder = _signed_in(app, other.email)
    assert "another e-mail" in intruder.get(path).get_data(as_text=True)
    response = intruder.post(path, data={"csrf_token": csrf_token(intruder, path)})
    assert response.status_code == 403
    api = intruder.post("/api/v1/invitations/accept", json={"token": _token(link)},
                        headers={"X-CSRFToken": csrf_token(intruder)})
    assert api.status_code == 403
    assert session.scalar(select(Membership).where(
        Membership.user_id == other.id, Membership.organization_id == org.id)) is None


def test_accepting_through_the_api(app, owner_client, org, session, passwords):
    person = make_user(session, passwords, make_org(session), email="li.na@example.com")
    session.commit()
    link = _invite(owner_client, org, person.email, role="reviewer").get_json()["accept_url"]
    invitee = _signed_in(app, person.email)
    response = invitee.post("/api/v1/invitations/accept", json={"token": _token(link)},
                            headers={"X-CSRFToken": csrf_token(invitee)})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["role"] == "reviewer"
    again = invitee.post("/api/v1/invitations/accept", json={"token": _token(link)},
                         headers={"X-CSRFToken": csrf_token(invitee)})
    assert again.status_code == 404


def test_a_withdrawn_or_replaced_invitation_no_longer_works(app, owner_client, org, session,
                                                            passwords):
    person = make_user(session, passwords, make_org(session), email="li.na@example.com")
    session.commit()
    first = _invite(owner_client, org, person.email).get_json()
    second = _invite(owner_client, org, person.email, role="member").get_json()
    invitee = _signed_in(app, person.email)
    assert invitee.get("/invitations/" + _token(first["accept_url"])).status_code == 404
    revoked = owner_client.post(f"/api/v1/invitations/{second['id']}/revoke",
                                headers={"X-CSRFToken": csrf_token(owner_client)})
    assert revoked.status_code == 200 and revoked.get_json()["status"] == "revoked"
    assert invitee.get("/invitations/" + _token(second["accept_url"])).status_code == 404
    listed = owner_client.get(f"/api/v1/organizations/{org.id}/invitations").get_json()["items"]
    assert [i["status"] for i in listed] == ["revoked", "revoked"]
    assert all("accept_url" not in i for i in listed)


def test_owners_invite_on_the_account_page(owner_client, org, session, passwords):
    make_user(session, passwords, make_org(session), email="li.na@example.com")
    session.commit()

    def invite(email):
        page = owner_client.post("/account", data={
            "email": email, "role": "member", "csrf_token": csrf_token(owner_client, "/account")})
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        assert re.search(r"/invitations/[\w-]{20,}", text)
        return re.sub(r"/invitations/[\w-]+|invitation-\d+|/account/invitations/\d+", "",
                      text.replace(email, "EMAIL"))

    # The same page for an address with an account and one without (its own row aside).
    known, unknown = invite("li.na@example.com"), invite("nobody.here@example.com")
    assert known.count("EMAIL") == unknown.count("EMAIL") >= 2
    assert session.scalar(select(Invitation.email).order_by(Invitation.id.desc()).limit(1)) \
        == "nobody.here@example.com"
    assert "Person" not in known.split("Invite a person")[1]  # no name of the invitee


def test_members_cannot_invite(sign_in_as, org):
    member = sign_in_as(org, "member")
    assert 'name="email"' not in member.get("/account").get_data(as_text=True)
    response = member.post("/account", data={"email": "x@example.com", "role": "owner",
                                             "csrf_token": csrf_token(member, "/account")})
    assert response.status_code == 403
