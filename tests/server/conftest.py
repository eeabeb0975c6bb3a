"""Real servers for the server tests: `bastion serve` (gunicorn + TLS + redirector).

Every server runs on 127.0.0.1 on free ports, in a temporary instance folder, with
BASTION_ENV=production; every process started here is stopped at teardown, and every wait
is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

BIN = Path(sys.executable).parent
STARTUP_SECONDS = 30.0
STOP_SECONDS = 15.0
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def clean_env(instance: Path, **overrides: str) -> dict[str, str]:
    """The test process's environment without any BASTION_*/gunicorn setting, plus ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BASTION_", "GUNICORN_"))
        and key not in {"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"}
    }
    env.update(
        BASTION_ENV="production",
        BASTION_INSTANCE_PATH=str(instance),
        BASTION_HOST=LOOPBACK,
        BASTION_SECRET_KEY=secrets.token_urlsafe(36),  # 48 characters
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value != ""}


def client_context(cafile: Path) -> ssl.SSLContext:
    """A client that verifies the server against the instance's self-signed certificate."""
    return ssl.create_default_context(cafile=str(cafile))


@dataclass
class Process:
    """A server process with its output in files (a full pipe would block the server)."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    handles: list[IO[bytes]] = field(default_factory=list)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig`, wait (bounded), kill if needed; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_SECONDS)
        for handle in self.handles:
            handle.close()
        return int(self.proc.returncode)


def spawn(argv: list[str], env: Mapping[str, str], cwd: Path, name: str) -> Process:
    out = (cwd / f"{name}.stdout").open("wb")
    err = (cwd / f"{name}.stderr").open("wb")
    proc = subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err
    )
    return Process(proc, cwd / f"{name}.stdout", cwd / f"{name}.stderr", [out, err])


def run(argv: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to end by itself (bounded)."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )


def get(
    port: int, path: str, cafile: Path, headers: Mapping[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=client_context(cafile), timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def wait_for_https(process: Process, port: int, cafile: Path) -> None:
    """Wait until GET /healthz answers 200 over TLS, or fail with the server's output."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            code = process.stop()  # reap it and close its log files
            pytest.fail(f"server exited with {code}:\n{process.stderr()[-3000:]}")
        if cafile.exists():
            try:
                response, _ = get(port, "/healthz", cafile)
                if response.status == 200:
                    return
            except (OSError, ssl.SSLError, http.client.HTTPException):
                pass
        time.sleep(0.1)
    process.stop()
    pytest.fail(f"server not ready after {STARTUP_SECONDS}s:\n{process.stderr()[-3000:]}")


def port_closed(port: int, seconds: float = 10.0) -> bool:
    """True once nothing accepts connections on `port` (bounded wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                pass
        except OSError:
            return True
        time.sleep(0.1)
    return False


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in a server's stderr (gunicorn's own lines are plain text)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


@dataclass
class Serve:
    """A running `bastion serve`: its process, ports, instance folder and certificate."""

    process: Process
    port: int
    http_port: int
    instance: Path
    env: dict[str, str]
    workdir: Path

    @property
    def cafile(self) -> Path:
        return self.instance / "tls" / "cert.pem"

    @property
    def public_url(self) -> str:
        return self.env["BASTION_PUBLIC_URL"]


def start_serve(workdir: Path, name: str = "serve", **overrides: str) -> Serve:
    """Start `bastion serve` from `workdir` (instance in workdir/instance) and wait for it."""
    port, http_port = free_port(), free_port()
    instance = workdir / "instance"
    settings = {
        "BASTION_PORT": str(port),
        "BASTION_HTTP_PORT": str(http_port),
        "BASTION_PUBLIC_URL": f"https://{LOOPBACK}:{port}",
    }
    env = clean_env(instance, **{**settings, **overrides})
    process = spawn([str(BIN / "bastion"), "serve"], env, workdir, name)
    server = Serve(process, port, http_port, instance, env, workdir)
    wait_for_https(process, port, server.cafile)
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One production `bastion serve` shared by the server tests."""
    running = start_serve(tmp_path_factory.mktemp("serve"))
    try:
        yield running
    finally:
        running.process.stop()
