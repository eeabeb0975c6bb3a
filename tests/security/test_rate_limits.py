"""Rate limits, attacked for real: guessing, stuffing, spoofed addresses, a dead store.

Controls proven (security/rate_limit.py, security/hash_guard.py): the named limits
ip_user.login (5/min), ip.login (20/min), user.login (100/h, across addresses),
ip.register (5/h) and user.reauth (5/min, every current-password check) refuse with 429 +
Retry-After + a page + an audit event; the IP is the one ProxyFix trusts; a Redis outage
fails closed (503) before any hashing; keys never hold an email address; a saturated
hashing guard refuses at once (503) instead of queueing.
"""

from __future__ import annotations

import os
import threading
import time
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from bastion.core import lanes
from bastion.extensions import limiter
from bastion.security import hash_guard, passwords, rate_limit
from bastion.security.rate_limit import LimitName, RateLimited
from tests.conftest import GOOD_PASSWORD, AuthActions, csrf_token_from
from tests.security.helpers import Factory, audit_rows, closed_port, saturated_hash_guard

VICTIM = "alice@example.com"
WRONG = "not the password at all"
TOO_MANY = "Too many requests. For your protection"


def login(client: FlaskClient, email: str = VICTIM, password: str = WRONG, **kw: Any) -> Any:
    token = csrf_token_from(client.get("/auth/login", **kw).get_data(as_text=True))
    data = {"email": email, "password": password, "csrf_token": token}
    return client.post("/auth/login", data=data, **kw)


def assert_limited(response: Any) -> None:
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    assert TOO_MANY in response.get_data(as_text=True)
    assert response.mimetype == "text/html"


# ------------------------------------------------------------------- guessing, stuffing
def test_guessing_one_account_from_one_address_stops_after_five(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    statuses = [login(client).status_code for _ in range(5)]
    assert statuses == [HTTPStatus.UNAUTHORIZED] * 5

    before = passwords.verify_count()
    refused = login(client, password=GOOD_PASSWORD)

    assert_limited(refused)
    assert passwords.verify_count() == before  # refused before any hashing
    events = audit_rows(app, "security.rate_limited")
    assert [(e.target, e.ip, e.outcome) for e in events] == [
        ("ip_user.login", "127.0.0.1", "denied")
    ]


def test_the_account_key_is_the_normalised_address(app: Flask, client: FlaskClient) -> None:
    # Case and spacing variants are one account, so they can't multiply the budget.
    for variant in ["Alice@Example.com", " alice@example.com", "ALICE@EXAMPLE.COM", VICTIM, VICTIM]:
        assert login(client, variant).status_code == HTTPStatus.UNAUTHORIZED
    assert_limited(login(client, "aLiCe@example.COM"))


def test_stuffing_many_accounts_from_one_address_stops_at_twenty(
    app: Flask, client: FlaskClient
) -> None:
    statuses = [login(client, f"user{n}@example.com").status_code for n in range(20)]
    assert set(statuses) == {HTTPStatus.UNAUTHORIZED}

    refused = login(client, "user20@example.com")

    assert_limited(refused)
    assert "ip.login" in [e.target for e in audit_rows(app, "security.rate_limited")]


def test_a_refused_flood_is_audited_once_per_minute(app: Flask, client: FlaskClient) -> None:
    for n in range(30):
        login(client, f"user{n}@example.com")
    assert len(audit_rows(app, "security.rate_limited")) == 1


@pytest.mark.settings(ratelimit_default="3 per minute")
def test_the_per_ip_default_stops_a_scan_of_missing_pages(app: Flask, client: FlaskClient) -> None:
    statuses = [client.get(f"/wp-admin/{n}.php").status_code for n in range(4)]

    assert statuses == [HTTPStatus.NOT_FOUND] * 3 + [HTTPStatus.TOO_MANY_REQUESTS]
    assert_limited(client.get("/auth/login"))  # the budget is per address, for every page
    [event] = audit_rows(app, "security.rate_limited")
    assert event.target == "ip.default"


def _count_default_hits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The store calls that spend ip.default, each by its cost, from now on."""
    calls: list[int] = []
    strategy = limiter.limiter
    original = strategy.hit

    def counting(item: Any, *identifiers: str, cost: int = 1) -> bool:
        if identifiers[:1] == (LimitName.IP_DEFAULT.value,):
            calls.append(cost)
        return bool(original(item, *identifiers, cost=cost))

    monkeypatch.setattr(strategy, "hit", counting)
    return calls


@pytest.mark.settings(ratelimit_default="100 per minute")
def test_on_redis_the_per_ip_default_reserves_hits_a_few_at_a_time_and_stops_at_its_limit(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One store round trip per page was a sixth of a signed-in page's CPU on scale-out.
    if app.extensions["bastion.settings"].redis_url is None:
        pytest.skip("the in-process store is counted exactly, one call per request")
    calls = _count_default_hits(monkeypatch)

    statuses = [client.get("/auth/login").status_code for _ in range(105)]

    assert statuses == [HTTPStatus.OK] * 100 + [HTTPStatus.TOO_MANY_REQUESTS] * 5
    assert calls[:50] == [2] * 50  # 100 pages, 50 reservations of 2 (a fiftieth of 100)
    assert calls[50:] == [2, 1] * 5  # past the limit: a failed reservation, an exact hit


@pytest.mark.settings(ratelimit_default="100 per minute")
def test_reserved_hits_never_let_several_processes_past_the_per_ip_default(
    app: Flask, make_app: Any
) -> None:
    if app.extensions["bastion.settings"].redis_url is None:
        pytest.skip("one process only without Redis (the production guard)")
    nodes = [app.test_client(), make_app(ratelimit_default="100 per minute").test_client()]

    statuses = [nodes[n % 2].get("/auth/login").status_code for n in range(130)]

    admitted = statuses.count(HTTPStatus.OK)
    assert 98 <= admitted <= 100  # a reservation still unused elsewhere may refuse early
    assert statuses[-20:] == [HTTPStatus.TOO_MANY_REQUESTS] * 20


@pytest.mark.settings(ratelimit_default="3 per minute")
def test_static_files_and_health_probes_do_not_spend_the_default(client: FlaskClient) -> None:
    for _ in range(5):
        with client.get("/static/app.css") as static:
            assert static.status_code == HTTPStatus.OK
        assert client.get("/healthz").status_code == HTTPStatus.OK
    assert client.get("/auth/login").status_code == HTTPStatus.OK  # the budget is untouched


@pytest.mark.settings(ratelimit_user_login="3 per hour")
def test_a_botnet_guessing_one_account_is_stopped_across_addresses(
    app: Flask, client: FlaskClient
) -> None:
    for n in range(3):
        addr = {"environ_base": {"REMOTE_ADDR": f"10.0.0.{n + 1}"}}
        assert login(client, **addr).status_code == HTTPStatus.UNAUTHORIZED

    assert_limited(login(client, environ_base={"REMOTE_ADDR": "10.0.0.99"}))
    # Another account from those addresses is unaffected: the limit is per account.
    other = login(client, "bob@example.com", environ_base={"REMOTE_ADDR": "10.0.0.99"})
    assert other.status_code == HTTPStatus.UNAUTHORIZED


@pytest.mark.settings(ratelimit_user_login="3 per hour", ratelimit_ip_user_login="50 per minute")
def test_the_owners_device_is_not_stopped_by_the_account_limit(
    app: Flask, auth: AuthActions
) -> None:
    """Otherwise 100 wrong guesses an hour would keep the owner out: a lockout-DoS."""
    auth.create_user()
    owner = app.test_client()
    assert login(owner, password=GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER
    owner.post("/auth/logout", data={"csrf_token": csrf_token_from(owner.get("/").text)})
    attacker = app.test_client()
    for _ in range(3):
        login(attacker, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert_limited(
        login(attacker, password=GOOD_PASSWORD, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    )

    assert login(owner, password=GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER


# Every form that checks the signed-in user's current password spends user.reauth (5/min)
# before hashing: a session rider (unattended browser, stolen cookie) guesses no faster there.
CURRENT_PASSWORD_FORMS = {
    "/auth/reauth": {"password": WRONG},
    "/account/email": {"password": WRONG, "new_email": "new@example.com"},
    "/account/": {
        "current_password": WRONG,
        "new_password": "a brand new passphrase 4711",
        "new_password_confirm": "a brand new passphrase 4711",
    },
}


@pytest.mark.parametrize("path", list(CURRENT_PASSWORD_FORMS))
def test_current_password_guessing_is_limited_per_account(
    auth: AuthActions, client: FlaskClient, path: str
) -> None:
    auth.create_user()
    assert auth.login().status_code == HTTPStatus.SEE_OTHER  # fresh: every form is open
    data = {**CURRENT_PASSWORD_FORMS[path], "csrf_token": auth.csrf(path)}
    for _ in range(5):
        refused = client.post(path, data=data)
        assert refused.status_code in {HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED}

    assert_limited(client.post(path, data=data))


def test_registration_is_limited_per_address(client: FlaskClient, auth: AuthActions) -> None:
    for n in range(5):
        assert auth.register(email=f"new{n}@example.com").status_code == HTTPStatus.SEE_OTHER
    assert_limited(auth.register(email="new5@example.com"))


def test_pages_are_not_counted_and_carry_no_rate_limit_headers(client: FlaskClient) -> None:
    for _ in range(30):
        response = client.get("/auth/login")
        assert response.status_code == HTTPStatus.OK
    names = [name.lower() for name, _value in response.headers]
    assert not [n for n in names if n.startswith(("x-ratelimit", "ratelimit", "retry-after"))]


def test_429_under_api_is_json(app: Flask) -> None:
    with app.test_request_context("/api/v1/anything"):
        response = app.handle_user_exception(RateLimited("ip.login", 42))
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert response.headers["Retry-After"] == "42"
    assert response.get_json()["status"] == HTTPStatus.TOO_MANY_REQUESTS


# ---------------------------------------------------------------- the address used
def test_a_spoofed_forwarded_for_changes_nothing_without_trusted_proxies(
    client: FlaskClient,
) -> None:
    for n in range(20):
        spoof = {"headers": {"X-Forwarded-For": f"198.51.100.{n}"}}
        assert login(client, f"user{n}@example.com", **spoof).status_code == 401
    refused = login(client, "user20@example.com", headers={"X-Forwarded-For": "203.0.113.7"})
    assert_limited(refused)


@pytest.mark.settings(trusted_proxies=1)
def test_behind_one_trusted_proxy_the_forwarded_address_is_the_key(
    app: Flask, client: FlaskClient
) -> None:
    for n in range(25):  # each from its own client address, as the proxy reports it
        spoof = {"headers": {"X-Forwarded-For": f"198.51.100.{n}"}}
        assert login(client, f"user{n}@example.com", **spoof).status_code == 401
    same = {"headers": {"X-Forwarded-For": "203.0.113.7"}}
    for n in range(20):
        assert login(client, f"other{n}@example.com", **same).status_code == 401
    assert_limited(login(client, "other20@example.com", **same))
    assert {e.ip for e in audit_rows(app, "security.rate_limited")} == {"203.0.113.7"}


# --------------------------------------------------------------------- store is down
def kill_limit_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the limits' store is a Redis nobody listens on (the rest keeps working)."""
    storage = RedisStorage(
        f"redis://127.0.0.1:{closed_port()}/0",
        wrap_exceptions=True,  # as init_app configures it
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
    )
    monkeypatch.setattr(rate_limit, "_strategy", lambda: MovingWindowRateLimiter(storage))


def test_limits_fail_closed_when_redis_is_down(
    app: Flask, client: FlaskClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.create_user()
    token = auth.csrf()  # the form was served while the store was up
    kill_limit_store(monkeypatch)
    before = passwords.verify_count()

    response = client.post(
        "/auth/login", data={"email": VICTIM, "password": GOOD_PASSWORD, "csrf_token": token}
    )

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.headers["Retry-After"]
    assert passwords.verify_count() == before  # nobody got to guess, right or wrong
    # Pages may still use ip.default hits reserved while the store was up, for up to a
    # second (security/rate_leases.py); once those are gone, a page is a 503 too.
    leases = app.extensions["bastion.rate_limits"].leases
    if leases is not None:
        leases._held.clear()
    assert client.get("/").status_code == HTTPStatus.SERVICE_UNAVAILABLE  # nobody got in
    assert client.get("/healthz").status_code == HTTPStatus.OK  # probes are not limited


def test_the_whole_app_fails_closed_with_redis_down(make_app: Factory) -> None:
    down = make_app(redis_url=f"redis://127.0.0.1:{closed_port()}/0", redis_timeout_seconds=0.5)
    before = passwords.verify_count()
    response = down.test_client().post(
        "/auth/login", data={"email": VICTIM, "password": GOOD_PASSWORD}
    )
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert passwords.verify_count() == before


# --------------------------------------------------------------- keys hold no address
def test_limit_keys_never_contain_the_email(app: Flask, client: FlaskClient) -> None:
    login(client, "secret.person@example.com")
    storage = limiter.storage
    if isinstance(storage, RedisStorage):
        keys = [k.decode() for k in storage.storage.scan_iter(match="*", count=1000)]
    else:
        keys = [*vars(storage)["events"], *vars(storage)["storage"]]
    assert any("ip_user.login" in key for key in keys)
    assert not [key for key in keys if "secret" in key or "example.com" in key]


def test_key_for_is_an_hmac_of_the_parts(app: Flask) -> None:
    with app.app_context():
        key = rate_limit.key_for(LimitName.USER_LOGIN, VICTIM)
        assert len(key) == 32
        assert VICTIM not in key
        assert key != rate_limit.key_for(LimitName.USER_RESET, VICTIM)  # per limit
        assert key == rate_limit.key_for(LimitName.USER_LOGIN, VICTIM)


# ------------------------------------------------------------------ the hashing guard
def test_a_saturated_hash_guard_refuses_at_once(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    with saturated_hash_guard():
        before = passwords.verify_count()
        started = time.monotonic()
        response = client.post(
            "/auth/login", data={"email": VICTIM, "password": GOOD_PASSWORD, "csrf_token": token}
        )
        elapsed = time.monotonic() - started

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.headers["Retry-After"] == "1"
    assert elapsed < 1.0  # refused after the short wait, not queued
    assert passwords.verify_count() == before
    # With the slots free again, the same request goes through.
    assert login(client, password=GOOD_PASSWORD).status_code == HTTPStatus.SEE_OTHER


@pytest.mark.settings(hash_concurrency=3, hash_wait_seconds=0.05)
def test_the_guard_follows_the_settings(app: Flask) -> None:
    guard = hash_guard.current()
    assert (guard.slots, guard.wait_seconds) == (3, 0.05)


def test_the_hashing_runs_on_lower_priority_threads(app: Flask) -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    request_thread = niceness()
    hashing_thread = hash_guard.current().run(niceness)
    # setpriority sets the niceness, never lowers it: a process already niced past 10 stays.
    assert hashing_thread >= hash_guard.HASHING_NICENESS
    assert hashing_thread > request_thread


def test_a_replaced_hashing_guard_lets_its_threads_end(app: Flask) -> None:
    old = hash_guard.current()
    hashing_thread = old.run(threading.current_thread)
    assert hashing_thread.is_alive()
    new = hash_guard.configure(old.slots, old.wait_seconds)
    hashing_thread.join(timeout=5)
    assert not hashing_thread.is_alive()
    assert new.run(lambda: 2 + 2) == 4  # the new guard hashes on threads of its own


# --------------------------------------------------- lanes (bastion/serving/worker.py)
def after_request_lane(send: Any) -> bool:
    """Whether the request `send()` makes sends its connection to the back lane."""
    lanes.begin()
    send()
    return lanes.end()


def test_failed_password_attempts_send_the_connection_to_the_back_lane(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    assert after_request_lane(lambda: client.get("/auth/login")) is False
    assert after_request_lane(lambda: login(client)) is True  # a wrong password: 401
    assert after_request_lane(lambda: login(client, "nobody@example.com")) is True
    # A password that proves right keeps the user's next page in front.
    assert after_request_lane(lambda: login(client, password=GOOD_PASSWORD)) is False


def test_a_rate_limit_refusal_sends_the_connection_to_the_back_lane(
    app: Flask, client: FlaskClient
) -> None:
    for n in range(20):
        login(client, f"user{n}@example.com")
    refused: list[Any] = []
    assert after_request_lane(lambda: refused.append(login(client, "user20@example.com")))
    assert_limited(refused[0])


def test_a_busy_hashing_guard_sends_the_connection_to_the_back_lane(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    auth.create_user()
    answers: list[Any] = []
    with saturated_hash_guard():
        assert after_request_lane(lambda: answers.append(login(client, password=GOOD_PASSWORD)))
    assert answers[0].status_code == HTTPStatus.SERVICE_UNAVAILABLE
