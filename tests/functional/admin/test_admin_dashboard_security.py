"""The dashboard's locked accounts, users without 2FA and open alerts."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Flask

from bastion.admin import service
from bastion.audit import Actor
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.security.lockout import AccountLockout
from tests.functional.admin.conftest import Console
from tests.functional.admin.state import give_totp, lock_account, raise_alert


def section(html: str, heading_id: str) -> str:
    match = re.search(rf'<section aria-labelledby="{heading_id}">(.*?)</section>', html, re.S)
    assert match, f"no section {heading_id}"
    return match.group(1)


def test_locked_accounts_with_until_and_hard_lock(app: Flask, admin: Console, auth: Any) -> None:
    timed = auth.create_user("timed@example.com")
    hard = auth.create_user("hard@example.com")
    expired = auth.create_user("expired@example.com")
    lock_account(app, timed)
    lock_account(app, hard, hard=True)
    lock_account(app, expired)
    with app.app_context():
        row = db.session.get(AccountLockout, expired)
        assert row is not None
        row.locked_until = utcnow() - timedelta(seconds=1)
        timed_row = db.session.get(AccountLockout, timed)
        assert timed_row is not None
        until = timed_row.locked_until
        db.session.commit()

    locked = section(admin.get("/admin/").get_data(as_text=True), "locked-heading")

    assert "Locked accounts (2)" in locked
    assert f'href="/admin/users/{timed}"' in locked
    assert f'href="/admin/users/{hard}"' in locked
    assert "expired@example.com" not in locked
    assert until is not None
    assert until.strftime("%Y-%m-%d %H:%M:%S") in locked
    assert "Hard lock: password disabled" in locked
    # The hard lock comes first: it needs someone to act.
    assert locked.index("hard@example.com") < locked.index("timed@example.com")
    assert "/admin/users?security=locked" in locked


def test_no_locked_account(admin: Console) -> None:
    locked = section(admin.get("/admin/").get_data(as_text=True), "locked-heading")
    assert "No account is locked." in locked


def test_users_without_2fa_count_and_link(app: Flask, admin: Console, auth: Any) -> None:
    with_2fa = auth.create_user("secured@example.com")
    auth.create_user("plain@example.com")
    gone = auth.create_user("gone@example.com")  # disabled accounts are not counted
    give_totp(app, with_2fa)
    with app.app_context():
        service.set_active(gone, False, actor=Actor.system())

    part = section(admin.get("/admin/").get_data(as_text=True), "no2fa-heading")

    # The admin and plain@ (secured@ has 2FA, gone@ is disabled).
    assert re.search(r'id="without-2fa-count">2<', part)
    assert "/admin/users?security=no2fa" in part.replace("&amp;", "&")


def test_open_alerts_are_listed_newest_first(app: Flask, admin: Console) -> None:
    raise_alert(app, subject="198.51.100.1")
    raise_alert(app, kind="repeated_denials", subject="192.0.2.9")
    alerts = section(admin.get("/admin/").get_data(as_text=True), "alerts-heading")
    assert "Open alerts (2)" in alerts
    assert alerts.index("192.0.2.9") < alerts.index("198.51.100.1")
    assert "many failed sign-ins across many accounts from one IP" in alerts
    assert alerts.count("Acknowledge</button>") == 2
