"""Limits hold exactly across processes and nodes: 2 app instances x 2 gunicorn workers.

Two gunicorn masters (think: two nodes behind a load balancer), each with 2 worker
processes, share one PostgreSQL schema and one Redis prefix. 50 concurrent logins for one
account from one address, alternating between the instances, must be admitted exactly
as often as `ip_user.login` allows (5); every other one gets 429. Scale-out profile only:
in-process counters can't be shared, which is why the production guard refuses them with
several workers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import IO

import pytest
from flask import Flask

from bastion.settings import TEST_DATA_KEY, Settings
from tests.conftest import PROFILE, AuthActions, Backend

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        PROFILE != "scaleout",
        reason="needs the scale-out profile: shared Redis counters and PostgreSQL",
    ),
]

INSTANCES = 2
WORKERS = 2
ATTEMPTS = 50
VICTIM = "alice@example.com"
STARTUP_SECONDS = 20.0
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 303 after sign-in is an answer, not something to follow


def _status(
    opener: urllib.request.OpenerDirector, request: urllib.request.Request
) -> tuple[int, str]:
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@pytest.fixture
def nodes(app: Flask, backend: Backend, tmp_path: Path) -> Iterator[list[str]]:
    """Start the app instances on the test's database and Redis prefix; stop them after."""
    secret = Settings.for_tests().secret_key
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(INSTANCES):
            port = _free_port()
            env = {
                **base_env,
                "BASTION_ENV": "testing",
                "BASTION_SECRET_KEY": secret,
                "BASTION_DATA_KEY": TEST_DATA_KEY,
                "BASTION_DATABASE_URL": backend.database_url,
                "BASTION_REDIS_URL": backend.redis_url or "",
                "BASTION_REDIS_PREFIX": backend.redis_prefix,
                "BASTION_INSTANCE_PATH": str(tmp_path / f"node{index}"),
                "BASTION_COOKIE_SECURE": "0",  # plain HTTP between the test and the nodes
                "BASTION_RATELIMIT_DEFAULT": "100000 per minute",
                "BASTION_HASH_WAIT_SECONDS": "5",  # this test counts limits, not the guard
            }
            log = (tmp_path / f"node{index}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gunicorn",
                        "--workers",
                        str(WORKERS),
                        "--worker-class",
                        "gthread",
                        "--threads",
                        "16",
                        "--bind",
                        f"127.0.0.1:{port}",
                        "bastion.serving.wsgi:app",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        _wait_until_serving(urls, procs)
        yield urls
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for log in logs:
            log.close()


def _wait_until_serving(urls: list[str], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    for url in urls:
        while True:
            assert all(p.poll() is None for p in procs), "an app instance exited at startup"
            try:
                with urllib.request.urlopen(url + "/auth/login", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{url} did not start"
            time.sleep(0.2)


@pytest.mark.timeout(60)
def test_fifty_concurrent_logins_admit_exactly_the_limit(
    app: Flask, auth: AuthActions, nodes: list[str]
) -> None:
    auth.create_user()
    limit = app.extensions["bastion.settings"].ratelimit_ip_user_login
    expected = int(limit.split()[0])  # "5 per minute"
    barrier = threading.Barrier(ATTEMPTS, timeout=30)
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        try:
            url = nodes[index % INSTANCES] + "/auth/login"
            opener = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect()
            )
            status, page = _status(opener, urllib.request.Request(url))
            assert status == 200, status
            match = CSRF.search(page)
            assert match is not None
            form = {"email": VICTIM, "password": "a wrong guess, again", "csrf_token": match[1]}
            post = urllib.request.Request(
                url, data=urllib.parse.urlencode(form).encode(), method="POST"
            )
            barrier.wait()  # all 50 at once
            status, _ = _status(opener, post)
            with lock:
                statuses.append(status)
        except BaseException as exc:  # surfaced below, with the other results
            with lock:
                errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    elapsed = time.monotonic() - started

    assert not errors, errors
    counts = Counter(statuses)
    admitted = ATTEMPTS - counts[429]
    assert admitted == expected, f"{counts} in {elapsed:.1f}s"
    assert counts == {401: expected, 429: ATTEMPTS - expected}
