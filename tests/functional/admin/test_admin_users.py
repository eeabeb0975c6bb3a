"""Admin flows on users: search, detail, role changes, disable/enable, sessions, invitations."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask

from bastion.audit import EventTag
from bastion.core.clock import utcnow
from bastion.security.sessions import remember_tokens_for
from tests.conftest import Outbox, csrf_token_from
from tests.functional.admin.conftest import ADMIN_EMAIL, Console, events, user_row

BOB = "bob@example.com"


# ---------------------------------------------------------------------------- search
def test_users_list_and_search(app: Flask, admin: Console, auth: Any) -> None:
    auth.create_user(BOB, name="Bob Builder")
    auth.create_user("carol@example.com", name="Carol Singer")

    everyone = admin.get("/admin/users").get_data(as_text=True)
    assert BOB in everyone
    assert "carol@example.com" in everyone
    assert "<caption>" in everyone
    assert 'scope="col"' in everyone
    assert 'for="q"' in everyone  # the search box is labelled

    by_name = admin.get("/admin/users?q=singer").get_data(as_text=True)
    assert "carol@example.com" in by_name
    assert BOB not in by_name
    by_email = admin.get("/admin/users?q=BOB@").get_data(as_text=True)
    assert BOB in by_email
    assert "carol@example.com" not in by_email


@pytest.mark.parametrize(
    "query",
    ["%", "_", "%%", "a_b", "\\", "' OR 1=1 --", "'; DROP TABLE users; --", '" OR ""="', "*"],
)
def test_search_wildcards_and_sql_are_literal(admin: Console, auth: Any, query: str) -> None:
    auth.create_user(BOB, name="Bob Builder")
    response = admin.get("/admin/users", query_string={"q": query})
    assert response.status_code == HTTPStatus.OK
    page = response.get_data(as_text=True)
    assert "No account matches." in page  # no address or name contains these characters
    assert admin.get("/admin/users").get_data(as_text=True).count("/admin/users/") >= 2


def test_search_matches_percent_and_underscore_literally(admin: Console, auth: Any) -> None:
    auth.create_user("under_score@example.com", name="Percent 100% Sure")
    auth.create_user("underXscore@example.com", name="Percent 1000 Sure")

    underscore = admin.get("/admin/users", query_string={"q": "under_"}).get_data(as_text=True)
    assert "under_score@example.com" in underscore
    assert "underXscore@example.com" not in underscore
    percent = admin.get("/admin/users", query_string={"q": "100%"}).get_data(as_text=True)
    assert "under_score@example.com" in percent
    assert "underXscore@example.com" not in percent


def test_status_filter_and_bad_input(admin: Console, auth: Any, app: Flask) -> None:
    auth.create_user(BOB)
    bob = user_row(app, BOB)
    admin.post(f"/admin/users/{bob.id}/disable")

    disabled = admin.get("/admin/users?status=disabled").get_data(as_text=True)
    assert BOB in disabled
    assert ADMIN_EMAIL not in disabled
    assert admin.get("/admin/users?status=nonsense").status_code == HTTPStatus.BAD_REQUEST
    assert admin.get("/admin/users?q=" + "x" * 101).status_code == HTTPStatus.BAD_REQUEST
    assert admin.get("/admin/users?q=%00").status_code == HTTPStatus.BAD_REQUEST
    assert admin.get("/admin/users?page=0").status_code == HTTPStatus.BAD_REQUEST
    assert admin.get("/admin/users?page=abc").status_code == HTTPStatus.BAD_REQUEST
    assert admin.get("/admin/users?page=-1").status_code == HTTPStatus.BAD_REQUEST


def test_users_are_paginated(admin: Console, app: Flask) -> None:
    from bastion.accounts.models import User
    from bastion.core.db import db

    with app.app_context():
        for i in range(30):
            db.session.add(User(email=f"u{i:02d}@example.com", name=f"User {i}", password_hash="x"))
        db.session.commit()

    first = admin.get("/admin/users").get_data(as_text=True)
    assert "Showing 1 to 25 of 31." in first
    assert 'rel="next" href="/admin/users?page=2"' in first
    second = admin.get("/admin/users?page=2").get_data(as_text=True)
    assert "Showing 26 to 31 of 31." in second
    assert 'rel="prev"' in second
    filtered = admin.get("/admin/users?q=example&page=2").get_data(as_text=True)
    assert "q=example" in filtered  # the filter survives in the page links
    beyond = admin.get("/admin/users?page=99")
    assert beyond.status_code == HTTPStatus.OK
    assert "Showing 26 to 31 of 31." in beyond.get_data(as_text=True)


# ---------------------------------------------------------------------------- detail
def test_user_detail(app: Flask, admin: Console, browser: Any) -> None:
    browser(BOB, name="Bob Builder")
    bob = user_row(app, BOB)
    page = admin.get(f"/admin/users/{bob.id}")
    assert page.status_code == HTTPStatus.OK
    html = page.get_data(as_text=True)
    assert "Bob Builder" in html
    assert BOB in html
    assert "127.0.0.1" in html  # his session
    assert "auth.login.success" not in html or BOB in html


@pytest.mark.parametrize(
    "path", ["/admin/users/999999", "/admin/users/2147483648", "/admin/users/0", "/admin/users/x"]
)
def test_unknown_user_is_404(admin: Console, path: str) -> None:
    assert admin.get(path).status_code == HTTPStatus.NOT_FOUND


# ------------------------------------------------------------------------ role change
def test_change_role_ends_sessions_and_is_audited(app: Flask, admin: Console, browser: Any) -> None:
    bob_browser = browser(BOB)
    bob = user_row(app, BOB)

    response = admin.post(f"/admin/users/{bob.id}/role", {"role": "auditor"})

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"] == f"/admin/users/{bob.id}"
    assert user_row(app, BOB).role == "auditor"
    assert not bob_browser.is_signed_in()  # a privilege change starts a new session
    [event] = events(app, EventTag.ADMIN_ROLE_CHANGE)
    assert event["actor"] == ADMIN_EMAIL
    assert event["target"] == BOB
    assert event["outcome"] == "success"
    assert event["details"]["before"] == {"role": "user"}
    assert event["details"]["after"] == {"role": "auditor"}

    # The same role again changes nothing and writes nothing.
    admin.post(f"/admin/users/{bob.id}/role", {"role": "auditor"})
    assert len(events(app, EventTag.ADMIN_ROLE_CHANGE)) == 1


@pytest.mark.parametrize("role", ["superuser", "", "ADMIN", "admin "])
def test_unknown_role_is_refused(app: Flask, admin: Console, auth: Any, role: str) -> None:
    auth.create_user(BOB)
    bob = user_row(app, BOB)
    response = admin.post(f"/admin/users/{bob.id}/role", {"role": role})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert user_row(app, BOB).role == "user"
    assert events(app, EventTag.ADMIN_ROLE_CHANGE) == []


def test_admin_cannot_change_own_role(app: Flask, admin: Console) -> None:
    me = user_row(app, ADMIN_EMAIL)
    response = admin.post(f"/admin/users/{me.id}/role", {"role": "user"})
    assert response.status_code == HTTPStatus.CONFLICT
    assert "your own account" in response.get_data(as_text=True)
    assert user_row(app, ADMIN_EMAIL).role == "admin"
    [event] = events(app, EventTag.ADMIN_ROLE_CHANGE)
    assert event["outcome"] == "failure"
    assert event["details"]["reason"] == "self"


def test_admin_can_demote_another_admin(app: Flask, admin: Console, auth: Any) -> None:
    auth.create_user("second@example.com", role="admin")
    second = user_row(app, "second@example.com")
    response = admin.post(f"/admin/users/{second.id}/role", {"role": "user"})
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert user_row(app, "second@example.com").role == "user"


# -------------------------------------------------------------------- disable / enable
def test_disable_revokes_sessions_and_remember_tokens_then_enable(
    app: Flask, admin: Console, browser: Any
) -> None:
    bob_browser = browser(BOB, remember=True)
    bob_phone = browser(BOB, create=False)
    bob = user_row(app, BOB)
    with app.app_context():
        assert remember_tokens_for(bob.id) == 1

    disabled = admin.post(f"/admin/users/{bob.id}/disable")

    assert disabled.status_code == HTTPStatus.SEE_OTHER
    assert user_row(app, BOB).active is False
    assert not bob_browser.is_signed_in()
    assert not bob_phone.is_signed_in()
    with app.app_context():
        assert remember_tokens_for(bob.id) == 0
    assert bob_browser.auth.login(BOB).status_code == HTTPStatus.UNAUTHORIZED
    [event] = events(app, EventTag.ADMIN_USER_DISABLE)
    assert event["target"] == BOB
    assert event["outcome"] == "success"
    assert event["details"]["before"] == {"active": True}
    assert event["details"]["after"] == {"active": False}

    enabled = admin.post(f"/admin/users/{bob.id}/enable")

    assert enabled.status_code == HTTPStatus.SEE_OTHER
    assert user_row(app, BOB).active is True
    assert bob_browser.auth.login(BOB).status_code == HTTPStatus.SEE_OTHER
    [event] = events(app, EventTag.ADMIN_USER_ENABLE)
    assert event["details"]["before"] == {"active": False}
    assert event["details"]["after"] == {"active": True}


def test_admin_cannot_disable_themselves(app: Flask, admin: Console) -> None:
    me = user_row(app, ADMIN_EMAIL)
    response = admin.post(f"/admin/users/{me.id}/disable")
    assert response.status_code == HTTPStatus.CONFLICT
    assert user_row(app, ADMIN_EMAIL).active is True
    assert admin.is_signed_in()
    [event] = events(app, EventTag.ADMIN_USER_DISABLE)
    assert event["outcome"] == "failure"
    assert event["details"]["reason"] == "self"


def test_disabled_admins_do_not_count_and_the_other_admin_can_be_disabled(
    app: Flask, admin: Console, auth: Any
) -> None:
    auth.create_user("second@example.com", role="admin")
    second = user_row(app, "second@example.com")
    assert admin.post(f"/admin/users/{second.id}/disable").status_code == HTTPStatus.SEE_OTHER
    assert user_row(app, "second@example.com").active is False


# --------------------------------------------------------------------------- sessions
def test_revoke_all_sessions_of_a_user(app: Flask, admin: Console, browser: Any) -> None:
    laptop = browser(BOB, remember=True)
    phone = browser(BOB, create=False)
    bob = user_row(app, BOB)

    response = admin.post(f"/admin/users/{bob.id}/sessions/revoke")

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert not laptop.is_signed_in()
    assert not phone.is_signed_in()
    with app.app_context():
        assert remember_tokens_for(bob.id) == 0
    [event] = events(app, EventTag.ADMIN_SESSIONS_REVOKE)
    assert event["target"] == BOB
    assert event["details"]["before"] == {"sessions": 2, "remember_tokens": 1}
    assert event["details"]["after"] == {"sessions": 0, "remember_tokens": 0}
    assert user_row(app, BOB).active is True  # revoking is not disabling


def test_revoking_own_sessions_keeps_this_one(app: Flask, admin: Console, browser: Any) -> None:
    other = browser(ADMIN_EMAIL, create=False)
    me = user_row(app, ADMIN_EMAIL)
    assert admin.post(f"/admin/users/{me.id}/sessions/revoke").status_code == 303
    assert admin.is_signed_in()
    assert not other.is_signed_in()


# ---------------------------------------------------------------------------- invites
def test_invite_mails_a_register_link_and_is_audited(
    app: Flask, admin: Console, outbox: Outbox
) -> None:
    page = admin.get("/admin/users/invite")
    assert page.status_code == HTTPStatus.OK
    token = csrf_token_from(page.get_data(as_text=True))

    response = admin.client.post(
        "/admin/users/invite", data={"email": "New.Person@Example.com", "csrf_token": token}
    )

    assert response.status_code == HTTPStatus.SEE_OTHER
    link = outbox.last_link("new.person@example.com")
    public_url = app.extensions["bastion.settings"].public_url.rstrip("/")
    assert link.startswith(public_url + "/auth/register?invite=")
    [event] = events(app, EventTag.INVITE)
    assert event["actor"] == ADMIN_EMAIL
    assert event["target"] == "new.person@example.com"


def test_invite_refuses_bad_and_existing_addresses(
    admin: Console, auth: Any, outbox: Outbox
) -> None:
    auth.create_user(BOB)
    sent = len(outbox.messages())  # the outbox is shared by the whole run
    bad = admin.post("/admin/users/invite", {"email": "not-an-address"})
    assert bad.status_code == HTTPStatus.BAD_REQUEST
    existing = admin.post("/admin/users/invite", {"email": "BOB@example.com"})
    assert existing.status_code == HTTPStatus.CONFLICT
    assert "already exists" in existing.get_data(as_text=True)
    assert len(outbox.messages()) == sent


# ----------------------------------------------------------------- freshness and CSRF
def test_action_without_a_recent_login_goes_to_reauth_first(
    app: Flask, admin: Console, auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user(BOB)
    bob = user_row(app, BOB)
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr("bastion.security.freshness.utcnow", lambda: later)

    response = admin.post(f"/admin/users/{bob.id}/disable")

    assert response.status_code == HTTPStatus.SEE_OTHER
    assert response.headers["Location"].startswith("/auth/reauth?next=")
    assert f"/admin/users/{bob.id}/disable" in response.headers["Location"]
    assert user_row(app, BOB).active is True
    assert events(app, EventTag.ADMIN_USER_DISABLE) == []

    # After re-authenticating, the way back changes nothing and leads to the user's page.
    monkeypatch.undo()
    back = admin.get(f"/admin/users/{bob.id}/disable")
    assert back.status_code == HTTPStatus.SEE_OTHER
    assert back.headers["Location"] == f"/admin/users/{bob.id}"
    assert user_row(app, BOB).active is True


@pytest.mark.parametrize(
    "action", ["disable", "enable", "role", "sessions/revoke"], ids=lambda a: a.replace("/", "-")
)
def test_action_without_csrf_token_is_400(
    app: Flask, admin: Console, auth: Any, action: str
) -> None:
    auth.create_user(BOB)
    bob = user_row(app, BOB)
    response = admin.client.post(f"/admin/users/{bob.id}/{action}", data={"role": "admin"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    after = user_row(app, BOB)
    assert after.active is True
    assert after.role == "user"
    assert events(app, EventTag.ADMIN_ROLE_CHANGE) == []
    assert events(app, EventTag.ADMIN_USER_DISABLE) == []


@pytest.mark.settings(registration="closed")
def test_no_invitation_while_registration_is_closed(admin: Console, outbox: Outbox) -> None:
    sent = len(outbox.messages())
    response = admin.post("/admin/users/invite", {"email": "new@example.com"})
    assert response.status_code == HTTPStatus.CONFLICT
    assert "Registration is closed" in response.get_data(as_text=True)
    assert len(outbox.messages()) == sent


def test_invite_without_csrf_token_is_400(admin: Console, outbox: Outbox) -> None:
    sent = len(outbox.messages())
    response = admin.client.post("/admin/users/invite", data={"email": "x@example.com"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert len(outbox.messages()) == sent
