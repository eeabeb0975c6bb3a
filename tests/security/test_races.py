"""Races on single-use secrets: one link, code, pending login or cookie spent N times at once.

An attacker (or a double-clicking user) can send the same one-time thing in many requests
at the same moment. Each test prepares RACERS browsers (one test client each, on the shared
app), holds them at a barrier, releases them together and checks that exactly one request
won and that nothing was half-done by the others: no second success, no second audit event
or notice, no second account, session or token. The guarantees are in the database (a
primary key, a conditional UPDATE or DELETE checked by its row count), so they hold across
threads, processes and nodes alike; the suite runs them on SQLite and on PostgreSQL + Redis.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from bastion.accounts import mfa, service
from bastion.accounts.models import User
from bastion.audit import EventTag
from bastion.cli import main
from bastion.core.db import db
from bastion.security import hash_guard, sessions
from bastion.security.sessions import REMEMBER_COOKIE, SESSION_COOKIE
from tests.conftest import GOOD_PASSWORD, AuthActions, Outbox, csrf_token_from
from tests.mfa_support import Clock, NewMail, enrol, login_2fa, nonce_from
from tests.security.helpers import (
    SUITE_PUBLIC_URL,
    audit_rows,
    cookie_value,
    count_users,
    mailed_reset_path,
    set_cookies,
    with_remember,
    with_session,
)

RACERS = 8
# Threads hand over the GIL every 10 µs instead of every 5 ms while they race, so their
# steps interleave the way requests on separate processes or nodes would.
SWITCH_INTERVAL = 1e-5
HOLD_SECONDS = 0.5  # see HeldWrites; well inside SQLite's 5-second busy timeout
ALICE = "alice@example.com"
PLENTY = "10000 per minute"
# The named limits would stop a single address sending this many requests; here the
# single-use guarantees are under test. Every racer may hash at once (no 503 from the guard).
ROOMY = dict(
    hash_concurrency=RACERS,
    ratelimit_ip_login=PLENTY,
    ratelimit_ip_user_login=PLENTY,
    ratelimit_user_login=PLENTY,
    ratelimit_user_reset=PLENTY,
    ratelimit_ip_reset=PLENTY,
    ratelimit_user_email=PLENTY,
    ratelimit_user_reauth=PLENTY,
    ratelimit_user_mfa=PLENTY,
    ratelimit_ip_mfa=PLENTY,
    ratelimit_ip_register=PLENTY,
)
pytestmark = pytest.mark.settings(**ROOMY)


# ------------------------------------------------------------------------- racing
class HeldWrites:
    """Writes to one table wait while this is held; reads go through.

    The worst interleaving for a check-then-act: every racer has read before any of them
    writes. Held by another connection, as a slow transaction would: PostgreSQL locks the
    table in SHARE mode (plain SELECTs pass, writes queue); SQLite takes the database write
    lock (BEGIN IMMEDIATE; readers of the WAL pass, writers wait on the busy timeout).
    """

    def __init__(self, app: Flask, table: str) -> None:
        with app.app_context():
            self.connection = db.engine.raw_connection()
            dialect = db.engine.dialect.name
        cursor = self.connection.cursor()
        if dialect == "postgresql":
            cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")  # a constant from the test
        else:
            cursor.execute("BEGIN IMMEDIATE")
        cursor.close()

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()


def race(
    requests: list[Callable[[], TestResponse]], held: HeldWrites | None = None
) -> list[TestResponse]:
    """Send every request at once (each from its own client); return the answers in order.

    The barrier releases all threads together; each response is read and closed as a WSGI
    server would, so mail deferred to the close goes out. With `held`, the racers' writes
    wait until HOLD_SECONDS after the start, long after every racer has done its reads.
    """
    barrier = threading.Barrier(len(requests), timeout=10)
    answers: list[TestResponse | None] = [None] * len(requests)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            response = requests[index]()
            response.get_data()
            response.close()
            answers[index] = response
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        for thread in threads:
            thread.start()
        if held is not None:
            time.sleep(HOLD_SECONDS)
            held.release()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def statuses(answers: list[TestResponse]) -> list[int]:
    return sorted(answer.status_code for answer in answers)


def one_won(
    answers: list[TestResponse],
    *,
    winner: int = HTTPStatus.SEE_OTHER,
    losers: set[int] = frozenset({HTTPStatus.BAD_REQUEST}),
) -> bool:
    """Exactly one answer is `winner`; every other one is a clear refusal (never a 500)."""
    found = statuses(answers)
    return found.count(winner) == 1 and all(s in losers for s in found if s != winner)


@dataclass(frozen=True)
class Form:
    """A page opened by one browser, ready to be posted later: its client and CSRF token."""

    client: FlaskClient
    path: str
    token: str

    def post(self, **fields: str) -> Callable[[], TestResponse]:
        return lambda: self.client.post(self.path, data={"csrf_token": self.token, **fields})


def open_form(client: FlaskClient, path: str) -> Form:
    page = client.get(path)
    assert page.status_code == HTTPStatus.OK, (path, page.status_code)
    return Form(client, path, csrf_token_from(page.get_data(as_text=True)))


def browsers(app: Flask, path: str, count: int = RACERS) -> list[Form]:
    """`count` fresh browsers, each with `path` open."""
    return [open_form(app.test_client(), path) for _ in range(count)]


def same_session(app: Flask, client: FlaskClient, path: str) -> list[Form]:
    """RACERS clients carrying `client`'s session cookie (one browser, many tabs), `path` open."""
    value = cookie_value(client)
    assert value is not None
    return [open_form(with_session(app, value), path) for _ in range(RACERS)]


def audited(app: Flask, event: EventTag, outcome: str = "success") -> int:
    return sum(1 for row in audit_rows(app, event.value) if row.outcome == outcome)


def password_of(racer: int) -> str:
    return f"{GOOD_PASSWORD} racer {racer}"


def password_works(app: Flask, email: str, password: str) -> bool:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        return hash_guard.verify_password(user.password_hash, password)


def email_of(app: Flask, uid: int) -> str:
    with app.app_context():
        user = db.session.get(User, uid)
        assert user is not None
        return user.email


def relative(link: str) -> str:
    return link.removeprefix(SUITE_PUBLIC_URL).removeprefix("https://localhost")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock.install(monkeypatch)


@pytest.fixture
def alice(auth: AuthActions) -> int:
    return auth.create_user()


# ------------------------------------------------------------------ password reset
def race_new_passwords(forms: list[Form]) -> list[TestResponse]:
    """Every reset form posted at once, each with a new password of its own."""
    return race(
        [
            f.post(password=password_of(i), password_confirm=password_of(i))
            for i, f in enumerate(forms)
        ]
    )


def assert_reset_once(app: Flask, answers: list[TestResponse], mail: NewMail) -> None:
    """One racer reset the password (to its own), with one audit event and one notice."""
    assert statuses(answers) == [HTTPStatus.SEE_OTHER] + [HTTPStatus.BAD_REQUEST] * (RACERS - 1)
    winner = next(i for i, a in enumerate(answers) if a.status_code == HTTPStatus.SEE_OTHER)
    assert [password_works(app, ALICE, password_of(i)) for i in range(RACERS)] == [
        i == winner for i in range(RACERS)
    ]
    assert audited(app, EventTag.PASSWORD_RESET) == 1
    assert mail.subjects(ALICE) == ["Your Bastion password was reset"]


def test_one_reset_link_posted_at_once_resets_once(
    app: Flask, client: FlaskClient, alice: int, outbox: Outbox
) -> None:
    path = mailed_reset_path(client, outbox)
    forms = browsers(app, path)
    mail = NewMail(outbox)

    assert_reset_once(app, race_new_passwords(forms), mail)


def test_several_reset_links_posted_at_once_reset_once(
    app: Flask, client: FlaskClient, alice: int, outbox: Outbox
) -> None:
    """Each link is bound to the password it replaces: the first reset voids the others."""
    paths = [mailed_reset_path(client, outbox) for _ in range(RACERS)]
    assert len(set(paths)) == RACERS
    forms = [open_form(app.test_client(), path) for path in paths]
    mail = NewMail(outbox)

    assert_reset_once(app, race_new_passwords(forms), mail)


# -------------------------------------------------------------- confirmation links
def test_one_confirmation_link_posted_at_once_confirms_once(
    app: Flask, auth: AuthActions, outbox: Outbox
) -> None:
    auth.register()
    forms = browsers(app, relative(outbox.last_link("bob@example.com")))

    answers = race([f.post() for f in forms])

    assert statuses(answers) == [HTTPStatus.SEE_OTHER] + [HTTPStatus.BAD_REQUEST] * (RACERS - 1)
    assert audited(app, EventTag.CONFIRM) == 1


def change_email_link(client: FlaskClient, outbox: Outbox, new: str) -> str:
    form = open_form(client, "/account/email")
    answer = form.post(password=GOOD_PASSWORD, new_email=new)()
    answer.close()
    assert answer.status_code == HTTPStatus.SEE_OTHER, answer.status_code
    return relative(outbox.last_link(new))


def test_one_email_change_link_posted_at_once_changes_once(
    app: Flask, auth: AuthActions, client: FlaskClient, alice: int, outbox: Outbox
) -> None:
    auth.login()
    path = change_email_link(client, outbox, "alice.new@example.com")
    forms = same_session(app, client, path)
    mail = NewMail(outbox)

    answers = race([f.post() for f in forms], HeldWrites(app, "users"))

    assert statuses(answers).count(HTTPStatus.SEE_OTHER) == 1
    assert email_of(app, alice) == "alice.new@example.com"
    assert audited(app, EventTag.EMAIL_CHANGE) == 1
    assert mail.subjects(ALICE) == ["Your Bastion email address was changed"]


def test_several_pending_email_changes_confirmed_at_once_change_once(
    app: Flask, auth: AuthActions, client: FlaskClient, alice: int, outbox: Outbox
) -> None:
    """Every link is bound to the old address: once one moved it, the others are void."""
    auth.login()
    news = [f"alice.{i}@example.com" for i in range(RACERS)]
    paths = [change_email_link(client, outbox, new) for new in news]
    value = cookie_value(client)
    assert value is not None
    forms = [open_form(with_session(app, value), path) for path in paths]
    mail = NewMail(outbox)

    answers = race([f.post() for f in forms])

    wins = [i for i, a in enumerate(answers) if a.status_code == HTTPStatus.SEE_OTHER]
    assert len(wins) == 1, statuses(answers)
    assert email_of(app, alice) == news[wins[0]]
    changes = [
        row for row in audit_rows(app, EventTag.EMAIL_CHANGE.value) if row.outcome == "success"
    ]
    assert [row.target for row in changes] == [news[wins[0]]]
    assert mail.subjects(ALICE) == ["Your Bastion email address was changed"]


# ------------------------------------------------------ invitations and first admin
def invite(app: Flask, email: str) -> None:
    result = app.test_cli_runner().invoke(main, ["users", "invite", "--email", email])
    assert result.exit_code == 0, result.output


def account_form(racer: int, email: str = "ignored@example.com") -> dict[str, str]:
    return {
        "email": email,
        "name": f"Racer {racer}",
        "password": GOOD_PASSWORD,
        "password_confirm": GOOD_PASSWORD,
    }


@pytest.mark.settings(**ROOMY, registration="invite")
def test_one_invitation_posted_at_once_creates_one_account(app: Flask, outbox: Outbox) -> None:
    invite(app, "dana@example.com")
    forms = browsers(app, relative(outbox.last_link("dana@example.com")))

    answers = race([f.post(**account_form(i)) for i, f in enumerate(forms)])

    assert statuses(answers) == [HTTPStatus.SEE_OTHER] + [HTTPStatus.BAD_REQUEST] * (RACERS - 1)
    assert count_users(app) == 1
    assert audited(app, EventTag.USER_CREATED) == 1


@pytest.mark.settings(**ROOMY, registration="invite")
def test_several_invitations_for_one_address_posted_at_once_create_one_account(
    app: Flask, outbox: Outbox
) -> None:
    paths = []
    for _ in range(RACERS):
        invite(app, "dana@example.com")
        paths.append(relative(outbox.last_link("dana@example.com")))
    forms = [open_form(app.test_client(), path) for path in paths]

    answers = race([f.post(**account_form(i)) for i, f in enumerate(forms)])

    assert statuses(answers) == [HTTPStatus.SEE_OTHER] + [HTTPStatus.BAD_REQUEST] * (RACERS - 1)
    assert count_users(app) == 1
    assert audited(app, EventTag.USER_CREATED) == 1


def setup_path(app: Flask) -> str:
    with app.app_context():
        link = service.issue_setup_link(service.Site("https://localhost", 15))
    assert link is not None
    return relative(link)


def admins(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(User.email).where(User.role == "admin")))


def test_one_setup_link_posted_at_once_creates_one_admin(app: Flask) -> None:
    forms = browsers(app, setup_path(app))

    answers = race([f.post(**account_form(i, f"root{i}@example.com")) for i, f in enumerate(forms)])

    assert one_won(answers, losers={HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND})
    assert len(admins(app)) == 1
    assert audited(app, EventTag.ADMIN_SETUP) == 1


def test_several_setup_links_posted_at_once_create_one_admin(app: Flask) -> None:
    """Every node's `bastion serve` prints its own link while no admin exists."""
    forms = [open_form(app.test_client(), setup_path(app)) for _ in range(RACERS)]

    answers = race([f.post(**account_form(i, f"root{i}@example.com")) for i, f in enumerate(forms)])

    assert one_won(answers, losers={HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND})
    assert len(admins(app)) == 1
    assert audited(app, EventTag.ADMIN_SETUP) == 1


# -------------------------------------------------------------------- unlock link
def test_one_unlock_link_posted_at_once_unlocks_once(
    app: Flask, auth: AuthActions, alice: int, outbox: Outbox
) -> None:
    attacker = app.test_client()
    token = csrf_token_from(attacker.get("/auth/login").get_data(as_text=True))
    for _ in range(10):  # the default lockout threshold
        attacker.post(
            "/auth/login", data={"email": ALICE, "password": "wrong " * 3, "csrf_token": token}
        ).close()
    link = outbox.last_link(ALICE)
    assert "/auth/unlock/" in link
    forms = browsers(app, relative(link))

    answers = race([f.post() for f in forms])

    assert statuses(answers) == [HTTPStatus.OK] + [HTTPStatus.BAD_REQUEST] * (RACERS - 1)
    assert audited(app, EventTag.ACCOUNT_UNLOCK) == 1


# ----------------------------------------------------------------- recovery codes
@pytest.fixture
def codes(
    app: Flask, auth: AuthActions, client: FlaskClient, alice: int, clock: Clock
) -> list[str]:
    """Alice with TOTP on, signed out again; returns her recovery codes."""
    auth.login()
    enrolled = enrol(client, clock)
    auth.logout()
    return enrolled.recovery_codes


def recovery_codes_left(app: Flask, uid: int) -> int:
    with app.app_context():
        user = db.session.get(User, uid)
        assert user is not None
        return mfa.remaining_recovery_codes(user)


def password_step(app: Flask) -> Form:
    """A fresh browser that proved Alice's password: the 2FA page open, with its nonce."""
    browser = app.test_client()
    token = csrf_token_from(browser.get("/auth/login").get_data(as_text=True))
    first = browser.post(
        "/auth/login", data={"email": ALICE, "password": GOOD_PASSWORD, "csrf_token": token}
    )
    first.close()
    assert first.headers["Location"] == "/auth/login/2fa"
    return open_form(browser, "/auth/login/2fa")


def nonce_of(form: Form) -> str:
    return nonce_from(form.client.get(form.path).get_data(as_text=True))


def signed_in_sessions(app: Flask, uid: int) -> int:
    with app.test_request_context():
        return len(sessions.list_user_sessions(uid))


def test_one_recovery_code_sent_from_many_sign_ins_at_once_signs_in_once(
    app: Flask, alice: int, codes: list[str]
) -> None:
    steps = [password_step(app) for _ in range(RACERS)]
    nonces = [nonce_of(step) for step in steps]

    answers = race(
        [s.post(code=codes[0], nonce=n) for s, n in zip(steps, nonces, strict=True)],
        HeldWrites(app, "recovery_codes"),
    )

    assert one_won(answers, losers={HTTPStatus.UNAUTHORIZED})
    assert signed_in_sessions(app, alice) == 1
    assert recovery_codes_left(app, alice) == len(codes) - 1
    assert audited(app, EventTag.MFA_RECOVERY_USED) == 1


def test_one_recovery_code_sent_to_one_reset_link_at_once_is_spent_once(
    app: Flask, client: FlaskClient, alice: int, codes: list[str], outbox: Outbox
) -> None:
    forms = browsers(app, mailed_reset_path(client, outbox))
    mail = NewMail(outbox)

    answers = race(
        [
            f.post(password=password_of(i), password_confirm=password_of(i), code=codes[0])
            for i, f in enumerate(forms)
        ],
        HeldWrites(app, "recovery_codes"),
    )

    assert one_won(answers)
    assert recovery_codes_left(app, alice) == len(codes) - 1
    assert audited(app, EventTag.MFA_RECOVERY_USED) == 1
    assert audited(app, EventTag.PASSWORD_RESET) == 1
    assert mail.subjects(ALICE) == ["Your Bastion password was reset"]


def test_one_recovery_code_sent_to_2fa_disable_at_once_turns_it_off_once(
    app: Flask,
    auth: AuthActions,
    client: FlaskClient,
    alice: int,
    codes: list[str],
    outbox: Outbox,
    clock: Clock,
) -> None:
    assert login_2fa(auth, codes[1]).status_code == HTTPStatus.SEE_OTHER  # a fresh sign-in
    forms = same_session(app, client, "/account/2fa/disable")
    mail = NewMail(outbox)

    answers = race(
        [f.post(password=GOOD_PASSWORD, code=codes[0]) for f in forms],
        HeldWrites(app, "recovery_codes"),
    )

    # A racer that starts once 2FA is off is sent to the settings page (303) unheard.
    assert set(statuses(answers)) <= {HTTPStatus.SEE_OTHER, HTTPStatus.BAD_REQUEST}
    assert not mfa_on(app, alice)
    assert audited(app, EventTag.MFA_RECOVERY_USED) == 2  # codes[1] at sign-in, codes[0] once
    assert audited(app, EventTag.MFA_DISABLE) == 1
    assert mail.subjects(ALICE) == ["Two-factor authentication is off"]


def mfa_on(app: Flask, uid: int) -> bool:
    with app.app_context():
        return mfa.has_totp(uid)


# ------------------------------------------------------------ the pending 2FA login
def test_one_password_step_completed_by_many_codes_at_once_signs_in_once(
    app: Flask, alice: int, codes: list[str], clock: Clock
) -> None:
    """One browser proved the password; its tabs send different valid codes at once."""
    step = password_step(app)
    nonce = nonce_of(step)
    value = cookie_value(step.client)
    assert value is not None
    tabs = [Form(with_session(app, value), step.path, step.token) for _ in range(RACERS)]
    sent = codes[:RACERS]

    answers = race([tab.post(code=code, nonce=nonce) for tab, code in zip(tabs, sent, strict=True)])

    new_sessions = [
        a
        for a in answers
        if SESSION_COOKIE in set_cookies(a) and set_cookies(a)[SESSION_COOKIE]["value"]
    ]
    assert len(new_sessions) == 1, statuses(answers)
    assert signed_in_sessions(app, alice) == 1
    assert audited(app, EventTag.LOGIN_SUCCESS) == 2  # the enrolment's sign-in, then this one


# ---------------------------------------------------------------- remember-me
def test_one_remember_cookie_presented_at_once_restores_one_session(
    app: Flask, auth: AuthActions, client: FlaskClient, alice: int
) -> None:
    auth.login(remember=True)
    remember = cookie_value(client, REMEMBER_COOKIE)
    assert remember is not None
    copies = [with_remember(app, remember) for _ in range(RACERS)]

    answers = race(
        [lambda c=copy: c.get("/") for copy in copies], HeldWrites(app, "remember_tokens")
    )

    assert one_won(answers, winner=HTTPStatus.OK, losers={HTTPStatus.FOUND})
    restored = [a for a in answers if a.status_code == HTTPStatus.OK]
    assert set_cookies(restored[0])[REMEMBER_COOKIE]["value"]  # the one successor
    with app.app_context():
        assert sessions.remember_tokens_for(alice) == 1
    assert signed_in_sessions(app, alice) == 2  # the password login's and the restored one
