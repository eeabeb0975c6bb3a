"""`bastion serve` and the gunicorn config: refusals, first-run files, proxy trust, shutdown."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import stat
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bastion.serving import command
from tests.server.conftest import (
    BIN,
    LOOPBACK,
    Serve,
    clean_env,
    free_port,
    get,
    port_closed,
    run,
    spawn,
    start_serve,
    wait_for_https,
)

pytestmark = pytest.mark.server

REFUSAL = "bastion: refusing to start: "
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:bastion.serving.gunicorn_conf"]
SECRET_FILES = ("secret_key", "data_key", "tls/cert.pem", "tls/key.pem")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line_refusal(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(REFUSAL), stderr
    return lines[0]


# ------------------------------------------------------------------------- refusals
def test_serve_refuses_several_workers_without_redis(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path / "instance", BASTION_WORKERS="2", BASTION_PORT=str(port))
    result = run([str(BIN / "bastion"), "serve"], env, tmp_path)
    assert result.returncode != 0
    reason = one_line_refusal(result.stderr)
    assert "BASTION_WORKERS" in reason
    assert "BASTION_REDIS_URL" in reason
    assert port_closed(port, seconds=0.5)


def serve_in_process(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run `bastion serve` in this process for paths that must refuse before serving.

    Cheaper than a new interpreter; binding, migrating and exec'ing are replaced by a
    failure so a missed refusal can't take over the test process.
    """

    def must_not_run(*_: object) -> None:
        raise AssertionError("bastion serve got past its checks")

    monkeypatch.setattr(command, "listen", must_not_run)
    monkeypatch.setattr(command, "exec_gunicorn", must_not_run)
    outer = {key: None for key in os.environ if key.startswith("BASTION_")}
    umask = os.umask(0o022)
    try:
        result = CliRunner().invoke(command.serve, [], env={**outer, **env})
    finally:
        os.umask(umask)
    assert not isinstance(result.exception, AssertionError), result.exception
    return result.exit_code, result.stderr


def test_serve_refuses_a_short_secret_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = clean_env(tmp_path / "instance", BASTION_SECRET_KEY="x" * 31)
    code, stderr = serve_in_process(env, monkeypatch)
    assert code != 0
    assert "BASTION_SECRET_KEY" in one_line_refusal(stderr)
    assert not (tmp_path / "instance" / "tls").exists()  # refused before any TLS work


def test_serve_never_generates_node_local_keys_for_a_shared_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = clean_env(
        tmp_path / "instance",
        BASTION_SECRET_KEY="",
        BASTION_DATABASE_URL="postgresql://127.0.0.1:1/bastion",  # never reached
    )
    code, stderr = serve_in_process(env, monkeypatch)
    assert code != 0
    assert "BASTION_SECRET_KEY is not set" in one_line_refusal(stderr)
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_gunicorn_config_refuses_several_workers_in_on_starting(server: Serve) -> None:
    """Even when BASTION_WORKERS says 1, the worker count gunicorn will fork decides.

    (``--workers`` here; GUNICORN_CMD_ARGS lands in the same ``server.cfg.workers``.)
    """
    port = free_port()
    argv = [*GUNICORN, "--workers", "2", "--bind", f"{LOOPBACK}:{port}"]
    result = run(argv, server.env, server.workdir)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(REFUSAL), result.stderr
    assert "2 worker processes" in last
    assert "BASTION_REDIS_URL" in last


# ------------------------------------------------------------------- proxy trust
@pytest.mark.parametrize(("trusted", "scheme"), [("0", "https"), ("1", "http")])
def test_forwarded_proto_is_believed_only_from_a_trusted_proxy(
    server: Serve, tmp_path: Path, trusted: str, scheme: str
) -> None:
    """gunicorn's forwarded_allow_ips follows BASTION_TRUSTED_PROXIES (echo app, same config).

    With 0 trusted proxies even a client on 127.0.0.1 can't downgrade the scheme; with 1,
    the loopback proxy may state it.
    """
    port = free_port()
    env = {**server.env, "BASTION_TRUSTED_PROXIES": trusted}
    argv = [
        *GUNICORN,
        "--bind",
        f"{LOOPBACK}:{port}",
        "--pythonpath",
        str(Path(__file__).parent),
        "echo_app:app",
    ]
    process = spawn(argv, env, tmp_path, "echo")
    try:
        wait_for_https(process, port, server.cafile)
        response, body = get(
            port,
            "/",
            server.cafile,
            {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"},
        )
    finally:
        process.stop()
    seen = json.loads(body)
    assert seen["url_scheme"] == scheme
    assert seen["remote_addr"] == LOOPBACK  # gunicorn never takes the IP from a header
    assert seen["server_software"] == "webserver"
    assert response.getheader("Server") == "webserver"


# ------------------------------------------------------------------ first run
def test_first_run_creates_private_files_and_a_second_run_keeps_them(tmp_path: Path) -> None:
    first = start_serve(tmp_path, "first", BASTION_SECRET_KEY="")  # no key: generate one
    try:
        instance = first.instance
        assert mode(instance) == 0o700
        assert mode(instance / "tls") == 0o700
        for name in SECRET_FILES:
            assert mode(instance / name) == 0o600, name
        assert len((instance / "secret_key").read_text().strip()) >= 64
        contents = {name: (instance / name).read_bytes() for name in SECRET_FILES}
        assert_self_signed_certificate(instance)
        # The setup link goes to stdout only, never into the (JSON) log on stderr.
        token = first.process.stdout().split("/setup/", 1)[1].split()[0]
        assert len(token) > 20
        assert token not in first.process.stderr()
    finally:
        assert first.process.stop(signal.SIGTERM) == 0
    assert port_closed(first.http_port), "the redirector outlived the server"

    second = start_serve(tmp_path, "second", BASTION_SECRET_KEY="", BASTION_HTTP_PORT="0")
    try:
        assert {name: (instance / name).read_bytes() for name in SECRET_FILES} == contents
        assert "generated" not in second.process.stderr()
    finally:
        assert second.process.stop(signal.SIGINT) == 0
    assert port_closed(second.port)


def assert_self_signed_certificate(instance: Path) -> None:
    cert = x509.load_pem_x509_certificate((instance / "tls" / "cert.pem").read_bytes())
    key = load_pem_private_key((instance / "tls" / "key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address(LOOPBACK) in names.get_values_for_type(x509.IPAddress)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=364) < lifetime <= timedelta(days=366)
