"""Exercise the mailers against a real local SMTP server and a real outbox directory."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.core.mail import (
    MailError,
    MailMessage,
    OutboxMailer,
    SmtpMailer,
    build_mailer,
)

SENDER = "Bastion <noreply@bastion.test>"
LINK = (
    "https://bastion.test/reset/eyJ1c2VyIjo0Mn0.ZkX9qA.s3cr3t-t0ken_with-a-long-tail?next=%2Fvault"
)
BODY = f"Hello,\n\nreset your password here:\n{LINK}\n\nThis link expires in 30 minutes.\n"


@dataclass
class Received:
    """One message as the SMTP server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


class Collector:
    """aiosmtpd handler that keeps every delivered message."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook name
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=parsed,
                # session.ssl is only set by STARTTLS; implicit TLS shows on the transport.
                tls=session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                login=login,
            )
        )
        return "250 Message accepted for delivery"


def free_port() -> int:
    """Return a currently unused TCP port on 127.0.0.1."""
    # aiosmtpd's Controller connects to its own port to finish starting, so port 0
    # cannot be passed straight through.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running local SMTP server."""

    port: int
    collector: Collector


ServerFactory = Callable[..., Server]


@pytest.fixture
def smtp_server() -> Iterator[ServerFactory]:
    """Start aiosmtpd servers on demand and stop them after the test."""
    controllers: list[Controller] = []

    def start(**kwargs: Any) -> Server:
        collector = Collector()
        port = free_port()
        controller = Controller(collector, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return Server(port=port, collector=collector)

    yield start
    for controller in controllers:
        controller.stop()


@dataclass
class Cert:
    """A throwaway self-signed certificate for 127.0.0.1."""

    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        """Return a server-side TLS context presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """Generate a self-signed certificate valid for IP 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastion test smtp")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    certfile = directory / "cert.pem"
    keyfile = directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Cert(certfile=certfile, keyfile=keyfile)


def reset_mail(to: str = "alice@example.com") -> MailMessage:
    """Return a message that carries a one-time link, like the real ones do."""
    return MailMessage(to=to, subject="Reset your Bastion password", body=BODY)


# --- SMTP, plain ---------------------------------------------------------------------------


def test_smtp_delivers_message_with_link_intact(smtp_server: ServerFactory) -> None:
    server = smtp_server()
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER, security="none")

    mailer.send(reset_mail())

    [got] = server.collector.received
    assert got.mail_from == "noreply@bastion.test"
    assert got.rcpt_tos == ["alice@example.com"]
    assert got.message["To"] == "alice@example.com"
    assert got.message["From"] == SENDER
    assert got.message["Subject"] == "Reset your Bastion password"
    assert got.message["Date"]
    assert got.message["Message-ID"].endswith("@bastion.test>")
    assert got.message.get_content_type() == "text/plain"
    content = got.message.get_content()
    assert LINK in content
    assert content.replace("\r\n", "\n") == BODY
    assert got.tls is False


def test_smtp_logs_domain_and_subject_but_never_body(
    smtp_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = smtp_server()
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER, security="none")

    with caplog.at_level(logging.INFO, logger="bastion.mail"):
        mailer.send(reset_mail("Alice@Example.COM"))

    [record] = [r for r in caplog.records if r.name == "bastion.mail"]
    assert record.getMessage() == "mail sent"
    assert record.__dict__["to_domain"] == "example.com"
    assert record.__dict__["subject"] == "Reset your Bastion password"
    assert record.__dict__["backend"] == "smtp"
    assert "s3cr3t" not in caplog.text
    assert all("s3cr3t" not in repr(value) for value in record.__dict__.values())
    assert all("alice" not in repr(value).lower() for value in record.__dict__.values())


# --- SMTP, TLS -----------------------------------------------------------------------------


def test_starttls_upgrades_before_sending(smtp_server: ServerFactory, cert: Cert) -> None:
    # require_starttls makes the server refuse MAIL on a plain connection, so delivery
    # alone proves the upgrade; session.ssl confirms it.
    server = smtp_server(tls_context=cert.server_context(), require_starttls=True)
    mailer = SmtpMailer(
        host="127.0.0.1", port=server.port, sender=SENDER, cafile=str(cert.certfile)
    )

    mailer.send(reset_mail())

    [got] = server.collector.received
    assert got.tls is True
    assert LINK in got.message.get_content()


def test_starttls_refuses_untrusted_certificate(smtp_server: ServerFactory, cert: Cert) -> None:
    server = smtp_server(tls_context=cert.server_context(), require_starttls=True)
    # No cafile: the system store does not trust the throwaway certificate.
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER)

    with pytest.raises(MailError) as excinfo:
        mailer.send(reset_mail())

    assert isinstance(excinfo.value.__cause__, ssl.SSLCertVerificationError)
    assert server.collector.received == []


def test_starttls_not_offered_is_an_error_not_a_downgrade(smtp_server: ServerFactory) -> None:
    server = smtp_server()  # plain server, no STARTTLS capability
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER, security="starttls")

    with pytest.raises(MailError):
        mailer.send(reset_mail())

    assert server.collector.received == []


def test_implicit_tls(smtp_server: ServerFactory, cert: Cert) -> None:
    server = smtp_server(ssl_context=cert.server_context())
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=server.port,
        sender=SENDER,
        security="tls",
        cafile=str(cert.certfile),
    )

    mailer.send(reset_mail())

    [got] = server.collector.received
    assert got.tls is True


# --- SMTP, AUTH ----------------------------------------------------------------------------


def password_checker(expected: bytes) -> Callable[..., AuthResult]:
    """Return an aiosmtpd authenticator accepting user "mailer" with one password."""

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == b"mailer"
            and auth_data.password == expected
        )
        # auth_data is what the server stores on the session, which the collector reads.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


def auth_server(smtp_server: ServerFactory, cert: Cert) -> Server:
    """Start a server that only accepts authenticated mail over STARTTLS."""
    return smtp_server(
        tls_context=cert.server_context(),
        require_starttls=True,
        authenticator=password_checker(b"correct horse"),
        auth_required=True,
        auth_require_tls=True,
    )


def test_login_after_starttls(smtp_server: ServerFactory, cert: Cert) -> None:
    server = auth_server(smtp_server, cert)
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=server.port,
        sender=SENDER,
        username="mailer",
        password="correct horse",
        cafile=str(cert.certfile),
    )

    mailer.send(reset_mail())

    [got] = server.collector.received
    assert got.tls is True
    assert got.login == b"mailer"


def test_login_failure_is_mail_error_without_password(
    smtp_server: ServerFactory, cert: Cert
) -> None:
    server = auth_server(smtp_server, cert)
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=server.port,
        sender=SENDER,
        username="mailer",
        password="wrong-battery-staple",
        cafile=str(cert.certfile),
    )

    with pytest.raises(MailError) as excinfo:
        mailer.send(reset_mail())

    assert "wrong-battery-staple" not in str(excinfo.value)
    assert "wrong-battery-staple" not in repr(mailer)
    assert server.collector.received == []


def test_login_over_plain_connection_is_refused_at_configuration() -> None:
    with pytest.raises(ValueError, match="starttls"):
        SmtpMailer(
            host="127.0.0.1",
            port=25,
            sender=SENDER,
            security="none",
            username="mailer",
            password="pw",
        )


def test_unknown_security_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="security"):
        SmtpMailer(host="127.0.0.1", port=25, sender=SENDER, security="ssl")


# --- SMTP, failures ------------------------------------------------------------------------


def test_closed_port_raises_mail_error_quickly() -> None:
    mailer = SmtpMailer(
        host="127.0.0.1", port=free_port(), sender=SENDER, security="none", timeout=1.0
    )

    started = time.monotonic()
    with pytest.raises(MailError) as excinfo:
        mailer.send(reset_mail())

    assert time.monotonic() - started < 3
    assert isinstance(excinfo.value.__cause__, OSError)


def test_silent_server_times_out() -> None:
    # A listening socket that never accepts: the kernel completes the TCP handshake, the
    # SMTP greeting never comes, so only the timeout can end the wait.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        mailer = SmtpMailer(
            host="127.0.0.1", port=port, sender=SENDER, security="none", timeout=0.5
        )

        started = time.monotonic()
        with pytest.raises(MailError) as excinfo:
            mailer.send(reset_mail())

    assert time.monotonic() - started < 3
    # smtplib reports the read timeout as a disconnect; the reason is in its text.
    assert "timed out" in str(excinfo.value.__cause__)


# --- header injection ----------------------------------------------------------------------

INJECTIONS = [
    pytest.param(MailMessage("victim@example.com\r\nBcc: x@evil", "Hi", BODY), id="to-crlf"),
    pytest.param(MailMessage("victim@example.com\nBcc: x@evil", "Hi", BODY), id="to-lf"),
    pytest.param(MailMessage("victim@example.com", "Hi\r\nBcc: x@evil", BODY), id="subject-crlf"),
    pytest.param(MailMessage("victim@example.com", "Hi\rBcc: x@evil", BODY), id="subject-cr"),
    pytest.param(MailMessage("victim@example.com", "Hi\u2028Bcc: x@evil", BODY), id="subject-ls"),
    pytest.param(MailMessage("victim@example.com, x@evil", "Hi", BODY), id="to-list"),
    pytest.param(MailMessage("Victim <victim@example.com>", "Hi", BODY), id="to-display-name"),
]


@pytest.mark.parametrize("message", INJECTIONS)
def test_header_injection_is_refused_before_sending(
    smtp_server: ServerFactory, message: MailMessage
) -> None:
    server = smtp_server()
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER, security="none")

    with pytest.raises(ValueError, match=r"mail (to|subject)") as excinfo:
        mailer.send(message)

    assert "evil" not in str(excinfo.value)
    assert server.collector.received == []


@pytest.mark.parametrize("message", INJECTIONS)
def test_header_injection_is_refused_before_writing(tmp_path: Path, message: MailMessage) -> None:
    mailer = OutboxMailer(tmp_path / "outbox", sender=SENDER)

    with pytest.raises(ValueError, match=r"mail (to|subject)"):
        mailer.send(message)

    assert list((tmp_path / "outbox").iterdir()) == []


# --- outbox --------------------------------------------------------------------------------


def test_outbox_writes_private_eml_files_and_reads_them_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = tmp_path / "instance" / "outbox"
    mailer = OutboxMailer(outbox, sender=SENDER)

    with caplog.at_level(logging.INFO, logger="bastion.mail"):
        mailer.send(reset_mail("alice@example.com"))
        mailer.send(MailMessage(to="bob@example.org", subject="Second", body="two"))

    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    files = sorted(outbox.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    # CRLF line endings: the files are RFC 5322 messages, not just "text".
    assert b"\r\nSubject: Reset your Bastion password\r\n" in files[0].read_bytes()

    first, second = mailer.messages()
    assert first["To"] == "alice@example.com"
    assert first["From"] == SENDER
    assert first["Message-ID"]
    assert first["Date"]
    assert LINK in first.get_content()
    assert second["To"] == "bob@example.org"
    assert second.get_content().strip() == "two"

    assert [r.__dict__["backend"] for r in caplog.records] == ["outbox", "outbox"]
    assert [r.__dict__["to_domain"] for r in caplog.records] == ["example.com", "example.org"]
    assert "s3cr3t" not in caplog.text


def test_outbox_ignores_unfinished_temp_files(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path, sender=SENDER)
    (tmp_path / ".abc.tmp").write_bytes(b"Subject: half-written\r\n")

    mailer.send(reset_mail())

    [only] = mailer.messages()
    assert only["Subject"] == "Reset your Bastion password"


def test_outbox_empty(tmp_path: Path) -> None:
    assert OutboxMailer(tmp_path / "new", sender=SENDER).messages() == []


# --- build_mailer --------------------------------------------------------------------------


def build(tmp_path: Path, host: str | None, **overrides: Any) -> Any:
    """Call build_mailer with test defaults."""
    settings: dict[str, Any] = {
        "smtp_host": host,
        "smtp_port": 587,
        "smtp_security": "starttls",
        "smtp_username": None,
        "smtp_password": None,
        "smtp_timeout": 10.0,
        "sender": SENDER,
        "outbox_dir": tmp_path / "outbox",
    }
    settings.update(overrides)
    return build_mailer(**settings)


@pytest.mark.parametrize("host", [None, ""])
def test_build_mailer_without_host_uses_outbox_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str | None
) -> None:
    with caplog.at_level(logging.INFO, logger="bastion.mail"):
        mailer = build(tmp_path, host)

    assert isinstance(mailer, OutboxMailer)
    assert mailer.directory == tmp_path / "outbox"
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "no SMTP server configured; mail goes to the outbox"
    assert record.__dict__["outbox"] == str(tmp_path / "outbox")


def test_build_mailer_with_host_uses_smtp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, smtp_server: ServerFactory
) -> None:
    server = smtp_server()
    with caplog.at_level(logging.INFO, logger="bastion.mail"):
        mailer = build(tmp_path, "127.0.0.1", smtp_port=server.port, smtp_security="none")

    assert isinstance(mailer, SmtpMailer)
    # Only our logger counts: the app's logging setup (other tests) may let aiosmtpd log too.
    assert [r for r in caplog.records if r.name == "bastion.mail"] == []
    assert not (tmp_path / "outbox").exists()
    mailer.send(reset_mail())
    assert len(server.collector.received) == 1
