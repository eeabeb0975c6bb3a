"""The document vault under gunicorn + TLS: upload/download MB/s, RSS, search p95.

Run: ``.venv/bin/python -m bench.documents [--profiles embedded,scaleout]
[--storages filesystem,database] [--docs 10000] [--searches 200]``

For each profile and storage backend it starts `bastion serve` (production settings, a
temporary instance folder, per-user limits raised: all load comes from one address),
signs in one user and measures, over loopback:

1. upload MB/s: POST /documents/upload of a ~16 MB text file (the whole pipeline: body
   parsing, staging + SHA-256, UTF-8 check, search text, store, commit), median of rounds;
2. download MB/s: GET /documents/<id>/download of that file, median of rounds;
3. peak RSS of the serving worker while it streams the 16 MB file to a slow reader,
   against its RSS just before (flat = the file is never held in memory);
4. search p95 over 10,000 documents (seeded straight into the database: half the user's,
   half another user's, a tenth of those shared), sequential GET /documents/search?q=...
   with one or two words from the corpus vocabulary, client-side latency.

Targets (issue 5): >= 100 MB/s up and down, flat RSS, search p95 <= 50 ms. Results are
printed and saved to bench/results/ (gitignored) as JSON. The load average is printed
too: on a shared 2-core machine every number moves with it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import memory, servers
from bench.client import SESSION_COOKIE, Client, csrf_token, sign_in
from bench.servers import LOOPBACK, Bastion, Profile

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1024 * 1024
FILE_BYTES = 16 * MiB - 4096  # within BASTION_MAX_UPLOAD_MB=16
EMAIL, OTHER = "bench@example.com", "other@example.com"
PASSWORD = "orchard lantern velvet 2718 bench"
LIMITS = {
    "BASTION_RATELIMIT_USER_UPLOAD": "1000000 per hour",
    "BASTION_RATELIMIT_USER_DOWNLOAD": "1000000 per hour",
    "BASTION_RATELIMIT_USER_SEARCH": "1000000 per minute",
}
DETAIL = re.compile(r"/documents/([A-Za-z0-9_-]{22})$")
TARGET_MBPS = 100.0
TARGET_SEARCH_P95_MS = 50.0
TARGET_RSS_GROWTH_MIB = 8.0


def vocabulary(size: int = 5000, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(size)]


def text_file(size: int) -> bytes:
    words = vocabulary()
    rng = random.Random(7)
    line = " ".join(rng.choice(words) for _ in range(2000)).encode() + b"\n"
    return (line * (size // len(line) + 1))[:size]


# ------------------------------------------------------------------------ HTTP pieces
def _connection(server: Bastion) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        LOOPBACK, server.port, context=servers.client_context(server.cafile), timeout=120
    )


def _cookie(session: str) -> str:
    return f"{SESSION_COOKIE}={session}"


def upload(server: Bastion, session: str, name: str, data: bytes) -> tuple[str, float]:
    """Upload `data`; return the new document's id and the seconds the POST took."""
    client = Client(server.port, servers.client_context(server.cafile))
    client.cookies[SESSION_COOKIE] = session
    token = csrf_token(client.request("GET", "/documents/upload").body.decode())
    client.close()
    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    conn = _connection(server)
    try:
        started = time.perf_counter()
        conn.putrequest("POST", "/documents/upload")
        conn.putheader("Cookie", _cookie(session))
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(head) + len(data) + len(tail)))
        conn.endheaders()
        conn.send(head)
        view = memoryview(data)
        for offset in range(0, len(data), MiB):
            conn.send(view[offset : offset + MiB])
        conn.send(tail)
        response = conn.getresponse()
        response.read()
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    match = DETAIL.search(response.getheader("Location", ""))
    if response.status != 303 or match is None:
        raise RuntimeError(f"upload answered {response.status}")
    return match.group(1), seconds


def download(
    server: Bastion, session: str, document_id: str, pace: float = 0.0
) -> tuple[int, float]:
    """Read the whole download (sleeping `pace` seconds per 64 KiB); return bytes, seconds."""
    conn = _connection(server)
    try:
        started = time.perf_counter()
        conn.request(
            "GET", f"/documents/{document_id}/download", headers={"Cookie": _cookie(session)}
        )
        response = conn.getresponse()
        total = 0
        while chunk := response.read(65536):
            total += len(chunk)
            if pace:
                time.sleep(pace)
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"download answered {response.status}")
    return total, seconds


def rss_mib(master: int) -> float:
    return max(usage.rss_mib for usage in memory.workers_usage(master))


def peak_rss_while(master: int, action: Any) -> tuple[float, float]:
    """RSS of the largest worker before, and its peak while `action()` runs (MiB)."""
    before = rss_mib(master)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(master))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join(timeout=5)
    return before, peak


# ------------------------------------------------------------------------------ seed
def seed(server: Bastion, count: int) -> None:
    """Insert `count` documents with searchable text straight into the server's database."""
    from sqlalchemy import insert, select, text

    from bastion import create_app
    from bastion.accounts.models import User
    from bastion.core.clock import utcnow
    from bastion.core.db import db
    from bastion.documents.models import Document, DocumentShare, DocumentText
    from bastion.settings import Settings

    app = create_app(Settings.from_env(server.env))
    words = vocabulary()
    rng = random.Random(11)
    with app.app_context():
        owner = db.session.scalar(select(User.id).where(User.email == EMAIL))
        other = db.session.scalar(select(User.id).where(User.email == OTHER))
        now = utcnow()
        for start in range(0, count, 1000):
            docs, texts, shares = [], [], []
            for number in range(start, min(count, start + 1000)):
                document_id = secrets.token_urlsafe(16)
                title = " ".join(rng.choice(words) for _ in range(4))
                mine = number % 2 == 0
                docs.append(
                    {
                        "id": document_id,
                        "owner_id": owner if mine else other,
                        "title": title,
                        "filename": f"seed-{number}.txt",
                        "kind": "txt",
                        "content_type": "text/plain; charset=utf-8",
                        "size": 1000,
                        "sha256": "0" * 64,
                        "storage_key": secrets.token_hex(16),
                        "created_at": now,
                    }
                )
                body = " ".join(rng.choice(words) for _ in range(300))
                texts.append({"document_id": document_id, "title": title, "body": body})
                if not mine and number % 10 == 1:
                    shares.append({"document_id": document_id, "email": EMAIL, "created_at": now})
            db.session.execute(insert(Document), docs)
            db.session.execute(insert(DocumentText), texts)
            if shares:
                db.session.execute(insert(DocumentShare), shares)
            db.session.commit()
        if db.engine.dialect.name == "postgresql":
            # What autovacuum does to a table this size soon after; the planner needs it.
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        db.engine.dispose()


def search_latencies(server: Bastion, session: str, searches: int) -> list[float]:
    words = vocabulary()
    rng = random.Random(13)
    client = Client(server.port, servers.client_context(server.cafile))
    client.cookies[SESSION_COOKIE] = session
    latencies = []
    try:
        for number in range(searches):
            terms = " ".join(rng.choice(words) for _ in range(1 + number % 2))
            answer = client.request("GET", "/documents/search?q=" + terms.replace(" ", "+"))
            if answer.status != 200:
                raise RuntimeError(f"search answered {answer.status}")
            latencies.append(answer.seconds * 1000)
    finally:
        client.close()
    return latencies


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


# ----------------------------------------------------------------------------- main
@contextmanager
def profile_named(name: str) -> Iterator[Profile]:
    """The profile, with a fresh PostgreSQL schema and Redis prefix for scale-out."""
    if name == "embedded":
        yield Profile("embedded", workers=1, threads=8)
        return
    with servers.pg_schema() as schema:
        yield Profile(
            "scaleout",
            workers=2,
            threads=4,
            database_url=servers.pg_url(schema),
            redis_url=servers.REDIS_URL,
            redis_prefix=f"bench-{secrets.token_hex(4)}:",
        )


def measure(
    profile: Profile, storage: str, docs: int, searches: int, rounds: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-docs-") as folder:
        keys = {}
        if profile.database_url:
            # Shared stores: `bastion serve` generates no keys; every node is given the same.
            from cryptography.fernet import Fernet

            keys = {
                "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
                "BASTION_DATA_KEY": Fernet.generate_key().decode(),
            }
        server = servers.start_bastion(
            Path(folder), profile, f"bastion-{storage}", BASTION_STORAGE=storage, **LIMITS, **keys
        )
        try:
            server.create_user(EMAIL, "Bench User", PASSWORD)
            server.create_user(OTHER, "Other User", PASSWORD)
            session = sign_in(server.port, servers.client_context(server.cafile), EMAIL, PASSWORD)
            data = text_file(FILE_BYTES)
            ups, downs, document_id = [], [], ""
            for number in range(rounds):
                document_id, seconds = upload(server, session, f"big-{number}.txt", data)
                ups.append(len(data) / MiB / seconds)
                size, seconds = download(server, session, document_id)
                assert size == len(data)
                downs.append(size / MiB / seconds)
            before, peak = peak_rss_while(
                server.process.pid,
                lambda: download(server, session, document_id, pace=0.002),
            )
            seed(server, docs)
            search_latencies(server, session, 20)  # warm up
            latencies = search_latencies(server, session, searches)
        finally:
            server.stop()
            if profile.redis_url:
                servers.delete_redis_keys(profile.redis_url, profile.redis_prefix)
    return {
        "profile": profile.label,
        "storage": storage,
        "upload_mbps": statistics.median(ups),
        "download_mbps": statistics.median(downs),
        "rss_before_mib": before,
        "rss_peak_mib": peak,
        "search_p50_ms": statistics.median(latencies),
        "search_p95_ms": p95(latencies),
        "documents": docs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default="embedded,scaleout")
    parser.add_argument("--storages", default="filesystem,database")
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = []
    for name in args.profiles.split(","):
        for storage in args.storages.split(","):
            with profile_named(name) as profile:
                found = measure(profile, storage, args.docs, args.searches, args.rounds)
            results.append(found)
            growth = found["rss_peak_mib"] - found["rss_before_mib"]
            print(
                f"{found['profile']} / {storage}: "
                f"upload {found['upload_mbps']:.0f} MB/s, "
                f"download {found['download_mbps']:.0f} MB/s "
                f"(target {TARGET_MBPS:.0f}); RSS {found['rss_before_mib']:.0f} -> "
                f"{found['rss_peak_mib']:.0f} MiB while streaming 16 MB (+{growth:.1f}, "
                f"target < {TARGET_RSS_GROWTH_MIB:.0f}); search over {found['documents']} docs "
                f"p50 {found['search_p50_ms']:.1f} ms, p95 {found['search_p95_ms']:.1f} ms "
                f"(target {TARGET_SEARCH_P95_MS:.0f})",
                flush=True,
            )
    print(f"load average: {os.getloadavg()}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"documents-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
