"""The guard rails in the admin service, tested without HTTP: self, last admin, races."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from bastion.admin import service
from bastion.audit import Actor, EventTag
from tests.functional.admin.conftest import events, user_row


def actor_for(app: Flask, email: str) -> Actor:
    return Actor(user_id=user_row(app, email).id, email=email, ip="192.0.2.1")


@pytest.fixture
def only_admin(app: Flask, auth: Any) -> int:
    user_id: int = auth.create_user("root@example.com", role="admin")
    return user_id


def test_the_last_admin_cannot_be_disabled_or_demoted(app: Flask, only_admin: int) -> None:
    # Only reachable through HTTP in a race (an admin can't act on themselves), so the
    # service is asked directly, by an actor that is not that admin.
    with app.app_context():
        with pytest.raises(service.GuardRail, match="last active administrator"):
            service.set_active(only_admin, False, actor=Actor.system())
        with pytest.raises(service.GuardRail, match="last active administrator"):
            service.change_role(only_admin, "auditor", actor=Actor.system())
    root = user_row(app, "root@example.com")
    assert root.active is True
    assert root.role == "admin"
    refused = events(app, EventTag.ADMIN_USER_DISABLE) + events(app, EventTag.ADMIN_ROLE_CHANGE)
    assert [e["details"]["reason"] for e in refused] == ["last-admin", "last-admin"]
    assert {e["outcome"] for e in refused} == {"failure"}


def test_disabled_or_unconfirmed_admins_do_not_count(
    app: Flask, only_admin: int, auth: Any
) -> None:
    from bastion.accounts.models import User
    from bastion.core.db import db

    dormant = auth.create_user("dormant@example.com", role="admin")
    with app.app_context():
        service.set_active(dormant, False, actor=Actor.system())
        db.session.add(User(email="pending@example.com", name="P", password_hash="x", role="admin"))
        db.session.commit()
        with pytest.raises(service.GuardRail):
            service.change_role(only_admin, "user", actor=Actor.system())


def test_promoting_needs_no_guard_and_then_demoting_works(
    app: Flask, only_admin: int, auth: Any
) -> None:
    bob = auth.create_user("bob@example.com")
    with app.app_context():
        assert service.change_role(bob, "admin", actor=Actor.system()) is True
        assert service.change_role(only_admin, "user", actor=Actor.system()) is True
        with pytest.raises(service.GuardRail):
            service.set_active(bob, False, actor=Actor.system())


def test_self_guards(app: Flask, only_admin: int) -> None:
    me = actor_for(app, "root@example.com")
    with app.app_context():
        with pytest.raises(service.GuardRail, match="your own account"):
            service.set_active(only_admin, False, actor=me)
        with pytest.raises(service.GuardRail, match="your own account"):
            service.change_role(only_admin, "admin", actor=me)


@pytest.mark.parametrize("user_id", [0, -1, 2**31, 10**30, 424242])
def test_unknown_ids_are_not_found(app: Flask, only_admin: int, user_id: int) -> None:
    with app.app_context():
        with pytest.raises(service.NotFound):
            service.get_user(user_id)
        with pytest.raises(service.NotFound):
            service.set_active(user_id, False, actor=Actor.system())
        with pytest.raises(service.NotFound):
            service.change_role(user_id, "user", actor=Actor.system())


def test_unknown_role(app: Flask, only_admin: int) -> None:
    with app.app_context(), pytest.raises(service.AdminError, match="listed roles"):
        service.change_role(only_admin, "root", actor=Actor.system())


def test_two_admins_demoting_each_other_at_once_leave_one(
    app: Flask, auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first demotion holds its locks while the second starts; the second must see it."""
    ada = auth.create_user("ada@example.com", role="admin")
    bea = auth.create_user("bea@example.com", role="admin")
    first_counted = threading.Event()
    release_first = threading.Event()
    real_check = service._check_removal
    calls = 0

    def slow_check(*args: Any) -> None:
        nonlocal calls
        calls += 1
        real_check(*args)
        if calls == 1:  # the first demotion: counted 2 admins, now hold the locks a moment
            first_counted.set()
            release_first.wait(timeout=10)

    monkeypatch.setattr(service, "_check_removal", slow_check)
    outcomes: dict[str, str] = {}

    def demote(name: str, target: int, actor_email: str) -> None:
        with app.app_context():
            actor = actor_for(app, actor_email)
            try:
                service.change_role(target, "user", actor=actor)
                outcomes[name] = "demoted"
            except service.GuardRail:
                outcomes[name] = "refused"

    first = threading.Thread(target=demote, args=("first", bea, "ada@example.com"))
    second = threading.Thread(target=demote, args=("second", ada, "bea@example.com"))
    first.start()
    assert first_counted.wait(timeout=10)
    second.start()
    second.join(timeout=0.5)  # it waits for the first one's locks
    release_first.set()
    first.join(timeout=20)
    second.join(timeout=20)

    assert outcomes == {"first": "demoted", "second": "refused"}
    roles = {user_row(app, e).role for e in ("ada@example.com", "bea@example.com")}
    assert roles == {"admin", "user"}
