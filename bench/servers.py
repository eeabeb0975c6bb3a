"""Start and stop the servers the benchmark measures, each in its own temporary folder.

- `bastion serve` (production settings, TLS, redirector) with a temporary instance folder,
  on the embedded profile (SQLite, in-process stores) or the scale-out profile (PostgreSQL
  in a schema of our own, Redis under a key prefix of our own);
- the bare Flask reference under the same gunicorn layout and certificate;
- a private ``redis-server`` on a free port (for counting Redis traffic without the other
  clients of the shared server).

Every wait is bounded and every process started here is stopped by its own pid.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

LOOPBACK = "127.0.0.1"
# The environment the servers run from: `make bench` points this at a runtime-only venv.
BIN = Path(os.environ.get("BASTION_BENCH_BIN") or Path(sys.executable).parent)
REPO = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 60.0
STOP_SECONDS = 15.0
PG_BASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

# Limits raised for the bench only: wrk and the sign-ins come from one address, and the
# flood must reach the hashing guard rather than stop at the per-IP login limit (it stands
# for a botnet with far more addresses than the 48 the bench can bind).
BENCH_LIMITS = {
    "BASTION_RATELIMIT_DEFAULT": "100000000 per minute",
    "BASTION_RATELIMIT_IP_LOGIN": "100000000 per minute",
    "BASTION_RATELIMIT_IP_USER_LOGIN": "100000000 per minute",
    "BASTION_RATELIMIT_USER_LOGIN": "100000000 per hour",
}


class ServerError(RuntimeError):
    """A server did not start; the message carries the end of its output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def clean_environ(**overrides: str) -> dict[str, str]:
    """This process's environment without BASTION_*/gunicorn settings, plus `overrides`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BASTION_", "GUNICORN_", "BENCH_"))
        and key not in {"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"}
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(overrides)
    return env


@dataclass
class Process:
    """A child process with its output in files (a full pipe would block it)."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    handles: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, a bounded wait, SIGKILL if needed; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_SECONDS)
        for handle in self.handles:
            handle.close()
        self.handles.clear()
        return int(self.proc.returncode)


def spawn(argv: list[str], env: Mapping[str, str], cwd: Path, name: str) -> Process:
    out = (cwd / f"{name}.stdout").open("wb")
    err = (cwd / f"{name}.stderr").open("wb")
    proc = subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err
    )
    return Process(name, proc, cwd / f"{name}.stdout", cwd / f"{name}.stderr", [out, err])


def client_context(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def wait_https(process: Process, port: int, cafile: Path, path: str = "/healthz") -> None:
    """Wait until GET `path` answers 200 over TLS; raise ServerError with its output if not."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if not process.running():
            raise ServerError(
                f"{process.name} exited with {process.proc.returncode}:\n{process.stderr()[-3000:]}"
            )
        if cafile.exists():
            conn = http.client.HTTPSConnection(
                LOOPBACK, port, context=client_context(cafile), timeout=5
            )
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    return
            except (OSError, ssl.SSLError, http.client.HTTPException):
                pass
            finally:
                conn.close()
        time.sleep(0.2)
    process.stop()
    raise ServerError(f"{process.name} not ready after {STARTUP_SECONDS:.0f}s")


# --------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class Profile:
    """Where the app keeps its data, and its gunicorn layout."""

    name: str
    workers: int
    threads: int
    database_url: str = ""
    redis_url: str = ""
    redis_prefix: str = ""
    # Shared stores: every node needs the same keys, so `bastion serve` generates none.
    keys: Path | None = None

    @property
    def label(self) -> str:
        stores = "PostgreSQL + Redis" if self.redis_url else "SQLite, in-process"
        return f"{self.name} ({stores}; {self.workers} x {self.threads} gthread)"


def write_keys(folder: Path) -> Path:
    """A secret key and a data key (Fernet) in `folder`, files mode 0600, for shared stores."""
    from cryptography.fernet import Fernet

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, value in (
        ("secret_key", secrets.token_urlsafe(48)),
        ("data_key", Fernet.generate_key().decode()),
    ):
        path = folder / name
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(value + "\n", encoding="ascii")
    return folder


def pg_url(schema: str) -> str:
    return f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema of our own, dropped (with everything in it) at the end."""
    import psycopg
    from psycopg import sql

    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_BASE_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(PG_BASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete every key that holds `prefix` (sessions, and Flask-Limiter's LIMITS:… keys)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        removed = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"*{_glob_escape(prefix)}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(client.delete(*batch))
                batch.clear()
        if batch:
            removed += int(client.delete(*batch))
        return removed
    finally:
        client.close()


# ----------------------------------------------------------------------- bastion serve
@dataclass
class Bastion:
    """A running `bastion serve`: gunicorn master (its pid), ports, instance and env."""

    process: Process
    port: int
    http_port: int
    instance: Path
    env: dict[str, str]

    @property
    def cafile(self) -> Path:
        return self.instance / "tls" / "cert.pem"

    @property
    def keyfile(self) -> Path:
        return self.instance / "tls" / "key.pem"

    def stop(self) -> None:
        self.process.stop()

    def create_user(self, email: str, name: str, password: str) -> None:
        """`bastion users create` in the same instance and environment (password on stdin)."""
        result = subprocess.run(
            [str(BIN / "bastion"), "users", "create", "--email", email, "--name", name],
            input=password + "\n",
            env=self.env,
            cwd=self.instance.parent,
            capture_output=True,
            text=True,
            timeout=STARTUP_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise ServerError(f"users create failed: {result.stderr.strip()[-2000:]}")


def start_bastion(workdir: Path, profile: Profile, name: str, **extra: str) -> Bastion:
    """`bastion serve` from `workdir` with its own instance folder and free ports."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    instance = workdir / "instance"
    overrides = {
        "BASTION_ENV": "production",
        "BASTION_INSTANCE_PATH": str(instance),
        "BASTION_HOST": LOOPBACK,
        "BASTION_PORT": str(port),
        "BASTION_HTTP_PORT": str(http_port),
        "BASTION_PUBLIC_URL": f"https://{LOOPBACK}:{port}",
        "BASTION_WORKERS": str(profile.workers),
        "BASTION_THREADS": str(profile.threads),
        "BASTION_LOG_LEVEL": "INFO",
        **BENCH_LIMITS,
    }
    if profile.database_url:
        overrides["BASTION_DATABASE_URL"] = profile.database_url
    if profile.redis_url:
        overrides["BASTION_REDIS_URL"] = profile.redis_url
        overrides["BASTION_REDIS_PREFIX"] = profile.redis_prefix
    if profile.keys is not None:
        overrides["BASTION_SECRET_KEY_FILE"] = str(profile.keys / "secret_key")
        overrides["BASTION_DATA_KEY_FILE"] = str(profile.keys / "data_key")
    overrides.update(extra)
    env = clean_environ(**overrides)
    process = spawn([str(BIN / "bastion"), "serve"], env, workdir, name)
    server = Bastion(process, port, http_port, instance, env)
    wait_https(process, port, server.cafile)
    return server


# ---------------------------------------------------------------------- bare reference
@dataclass
class Bare:
    process: Process
    port: int

    def stop(self) -> None:
        self.process.stop()


def start_bare(workdir: Path, profile: Profile, cert: Path, key: Path, name: str) -> Bare:
    """The bare Flask app under the same gunicorn layout, certificate and TLS policy."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = clean_environ(
        BENCH_BIND=f"{LOOPBACK}:{port}",
        BENCH_WORKERS=str(profile.workers),
        BENCH_THREADS=str(profile.threads),
        BENCH_CERTFILE=str(cert),
        BENCH_KEYFILE=str(key),
    )
    argv = [str(BIN / "python"), "-m", "gunicorn", "-c", "python:bench.bare_gunicorn_conf"]
    process = spawn(argv, env, workdir, name)
    wait_https(process, port, cert, path="/auth/login")
    return Bare(process, port)


# ---------------------------------------------------------------------- private Redis
@dataclass
class PrivateRedis:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def stop(self) -> None:
        self.process.stop()


def start_private_redis(workdir: Path) -> PrivateRedis | None:
    """A throw-away redis-server on a free port (no persistence), or None if there is none."""
    binary = Path("/usr/bin/redis-server")
    if not binary.exists():
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    process = spawn(argv, os.environ, workdir, "private-redis")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return PrivateRedis(process, port)
        except OSError:
            pass
        time.sleep(0.1)
    process.stop()
    return None
