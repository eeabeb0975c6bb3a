"""The login flood of issue 3 and the paced probe that times signed-in pages meanwhile.

``python -m bench.flood flood ...`` floods ``POST /auth/login`` with failed sign-ins (unknown
addresses, so every attempt costs the server one argon2 verify against its dummy hash) from
many client addresses: one thread per source address 127.0.0.2, 127.0.0.3, ... (all of
127.0.0.0/8 is loopback on Linux), each on its own keep-alive TLS connection, as fast as
the server answers (``--reconnect``: a new TLS connection for every attempt, the flood
that Bastion's back lane can't recognise). It prints a JSON summary: answers by status,
503s split into the hashing guard's (``Retry-After: 1``) and others, and connection errors.

``python -m bench.flood probe ...`` requests one path with a signed-in cookie (from the
environment variable BENCH_SESSION_COOKIE) at a fixed pace from a few connections and
prints every latency (ms) and status as JSON. A paced probe measures what a signed-in user
waits, not how much the server can serve; wrk (closed loop, as fast as possible) would only
measure how the CPU is shared.

Both run as separate processes so neither's GIL slows the other down.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import ssl
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench.client import Client, ClientError
from bench.servers import client_context

COOKIE_ENV = "BENCH_SESSION_COOKIE"  # the probe's session cookie (kept off the command line)
WRONG_PASSWORD = "not the password, flood attempt 0000"


def source_addresses(count: int) -> list[str]:
    return [f"127.0.0.{n}" for n in range(2, 2 + count)]


def _flood_worker(
    port: int,
    context: ssl.SSLContext,
    source: str,
    deadline: float,
    statuses: Counter[str],
    latencies: list[float],
    lock: threading.Lock,
    reconnect: bool = False,
) -> None:
    client = Client(port, context, source=source, timeout=15)
    token: str | None = None
    local: Counter[str] = Counter()
    times: list[float] = []
    while time.monotonic() < deadline:
        try:
            if token is None:
                token = client.login_form()
            answer = client.request(
                "POST",
                "/auth/login",
                form={
                    "email": f"flood-{secrets.token_hex(6)}@example.com",
                    "password": WRONG_PASSWORD,
                    "csrf_token": token,
                },
            )
        except (OSError, http.client.HTTPException, ClientError):
            local["connection error"] += 1
            token = None
            client.close()
            time.sleep(0.05)
            continue
        times.append(answer.seconds * 1000)
        if answer.status == 503:
            guard = answer.headers.get("Retry-After") == "1"
            local["503 hash guard" if guard else "503 other"] += 1
        else:
            local[str(answer.status)] += 1
        if answer.status == 400:  # the CSRF token expired: fetch a new one
            token = None
        if reconnect:  # a new TLS connection (full handshake) for the next attempt
            client.close()
    client.close()
    with lock:
        statuses.update(local)
        latencies.extend(times)


def flood(
    port: int, cafile: Path, sources: int, seconds: float, reconnect: bool = False
) -> dict[str, object]:
    context = client_context(cafile)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds
    threads = [
        threading.Thread(
            target=_flood_worker,
            args=(port, context, source, deadline, statuses, latencies, lock, reconnect),
            daemon=True,
        )
        for source in source_addresses(sources)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    elapsed = time.monotonic() - started
    latencies.sort()
    answered = sum(n for status, n in statuses.items() if status != "connection error")
    return {
        "sources": sources,
        "seconds": elapsed,
        "statuses": dict(statuses),
        "answered": answered,
        "rate": answered / elapsed if elapsed else 0.0,
        "median_ms": latencies[len(latencies) // 2] if latencies else None,
        "cpu_seconds": time.process_time(),
    }


def _probe_worker(
    client: Client,
    path: str,
    interval: float,
    phase: float,
    seconds: float,
    out: list[tuple[float, str]],
    lock: threading.Lock,
) -> None:
    """Time GET `path` every `interval` s for `seconds`, after one untimed warm-up request.

    The warm-up (TLS handshake) runs in this thread right before the paced loop, so the
    connection is never left idle long enough for the server's keep-alive timeout to close
    it under the client's feet (a client artefact, not a server failure).
    """
    mine: list[tuple[float, str]] = []
    try:
        client.request("GET", path)
    except (OSError, http.client.HTTPException) as exc:
        mine.append((float("nan"), f"error {type(exc).__name__}"))
    start = time.monotonic() + phase
    deadline = start + seconds
    due = start
    while due < deadline:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started = time.perf_counter()
        try:
            answer = client.request("GET", path)
            mine.append((answer.seconds * 1000, str(answer.status)))
        except (OSError, http.client.HTTPException) as exc:
            # No answer at all: counted as a failure, with its latency until the error.
            mine.append(((time.perf_counter() - started) * 1000, f"error {type(exc).__name__}"))
        due += interval
    client.close()
    with lock:
        out.extend(mine)


def probe(
    port: int, cafile: Path, cookie: str, path: str, rate: float, connections: int, seconds: float
) -> dict[str, object]:
    context = client_context(cafile)
    samples: list[tuple[float, str]] = []
    lock = threading.Lock()
    interval = connections / rate
    threads = []
    for n in range(connections):
        client = Client(port, context, timeout=15)
        client.cookies["__Host-session"] = cookie
        phase = n * interval / connections  # spread the connections' requests evenly
        threads.append(
            threading.Thread(
                target=_probe_worker,
                args=(client, path, interval, phase, seconds, samples, lock),
                daemon=True,
            )
        )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    return {
        "latencies_ms": [ms for ms, _ in samples],
        "statuses": dict(Counter(status for _, status in samples)),
        "cpu_seconds": time.process_time(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("flood", "probe"):
        mode = sub.add_parser(name)
        mode.add_argument("--port", type=int, required=True)
        mode.add_argument("--cafile", type=Path, required=True)
        mode.add_argument("--seconds", type=float, required=True)
    sub.choices["flood"].add_argument("--sources", type=int, default=48)
    sub.choices["flood"].add_argument(
        "--reconnect", action="store_true", help="a new TLS connection for every attempt"
    )
    sub.choices["probe"].add_argument("--path", default="/")
    sub.choices["probe"].add_argument("--rate", type=float, default=40.0)
    sub.choices["probe"].add_argument("--connections", type=int, default=2)
    args = parser.parse_args(argv)
    if args.mode == "flood":
        result = flood(args.port, args.cafile, args.sources, args.seconds, args.reconnect)
    else:
        result = probe(
            args.port,
            args.cafile,
            os.environ[COOKIE_ENV],
            args.path,
            args.rate,
            args.connections,
            args.seconds,
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
