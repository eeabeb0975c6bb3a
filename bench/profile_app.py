"""Where a request's time goes inside the app: cProfile over the WSGI app, no server, no TLS.

Run: ``.venv/bin/python -m bench.profile_app [--requests 2000] [--path /] [--top 30]``

Builds Bastion in-process with production settings (embedded profile: SQLite and in-process
stores in a temporary instance folder, rate limits raised), migrates, creates and signs in a
user through the test client, then serves `--requests` GETs of `--path` under cProfile and
the same through the bare Flask reference. Prints CPU time per request for both (their
ratio is the app-level cost of the controls, before gunicorn and TLS dilute it) and the
functions that take the most time. ``--redis URL`` profiles the scale-out session and
rate-limit stores instead (PostgreSQL stays out: SQLite keeps the profile about the app).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.servers import BENCH_LIMITS

PASSWORD = "bench profile " + "pw-" * 4


def build_bastion(instance: Path, redis_url: str | None, prefix: str) -> Any:
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade

    from bastion import app as app_module
    from bastion.accounts import service
    from bastion.audit import Actor
    from bastion.core.db import db
    from bastion.settings import Settings

    limits = {key.removeprefix("BASTION_").lower(): value for key, value in BENCH_LIMITS.items()}
    settings = Settings(
        instance_path=instance,
        secret_key=secrets.token_urlsafe(48),
        data_key=(Fernet.generate_key().decode(),),
        public_url="https://localhost",
        redis_url=redis_url,
        redis_prefix=prefix,
        **limits,
    )
    app = app_module.create_app(settings)
    enable = getattr(app_module, "enable_migrations", None)
    if enable is not None:  # Alembic is wired only where migrations run
        enable(app)
    with app.app_context():
        upgrade()
        service.create_user(
            email="bench@example.com",
            name="Bench User",
            password=PASSWORD,
            role="user",
            actor=Actor.system(),
            site=service.Site(settings.public_url, settings.password_min_length),
        )
        db.session.remove()
    return app


def signed_in_client(app: Any) -> Any:
    client = app.test_client()
    page = client.get("/auth/login", base_url="https://localhost").get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    if match is None:
        raise RuntimeError("no CSRF token on the login page")
    answer = client.post(
        "/auth/login",
        base_url="https://localhost",
        data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": match.group(1)},
    )
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in answered {answer.status_code}")
    return client


def measure(client: Any, path: str, requests: int, profile: cProfile.Profile | None) -> float:
    """CPU seconds per request for `requests` GETs (optionally under `profile`)."""
    for _ in range(50):  # warm up
        client.get(path, base_url="https://localhost")
    cpu = time.process_time()
    if profile:
        profile.enable()
    for _ in range(requests):
        answer = client.get(path, base_url="https://localhost")
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}")
    if profile:
        profile.disable()
    return (time.process_time() - cpu) / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cProfile of one page inside the app")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--path", default="/")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--redis", default=None, help="scale-out stores: a Redis URL")
    args = parser.parse_args(argv)

    import logging

    from bench.bare_app import app as bare_app

    instance = Path(tempfile.mkdtemp(prefix="bastion-profile-"))
    prefix = f"bench-profile-{secrets.token_hex(4)}:"
    try:
        app = build_bastion(instance, args.redis, prefix)
        logging.getLogger().setLevel(logging.WARNING)  # the access log would time the disk
        client = signed_in_client(app) if args.path == "/" else app.test_client()
        bare_cpu = measure(bare_app.test_client(), args.path, args.requests, None)
        plain_cpu = measure(client, args.path, args.requests, None)
        logging.getLogger().setLevel(logging.INFO)
        logged_cpu = measure(client, args.path, args.requests, None)
        # CPU time of the serving thread: waits (locks, other processes' load) don't count.
        profile = cProfile.Profile(time.thread_time)
        measure(client, args.path, args.requests, profile)
    finally:
        shutil.rmtree(instance, ignore_errors=True)
        if args.redis:
            from bench.servers import delete_redis_keys

            delete_redis_keys(args.redis, prefix)

    print(f"GET {args.path}, {args.requests} requests in-process (Flask test client, no TLS)")
    print(f"  bare Flask            {bare_cpu * 1e3:7.3f} ms CPU/request")
    print(f"  bastion, no logging   {plain_cpu * 1e3:7.3f} ms CPU/request")
    print(f"  bastion, access log   {logged_cpu * 1e3:7.3f} ms CPU/request (stderr)")
    print(f"  bare/bastion          {bare_cpu / logged_cpu:7.2f}")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats(order).print_stats(args.top)
        print(
            f"\n--- top {args.top} by {order}, thread CPU time (cProfile inflates small calls) ---"
        )
        text = out.getvalue()
        text = text[text.find("   ncalls") :].rstrip()
        print(re.sub(r"\S*/(site-packages|src)/", "", text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
