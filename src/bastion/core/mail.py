"""Send plain-text mail over SMTP, or into a local outbox when no server is configured."""

from __future__ import annotations

import logging
import os
import secrets
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol

__all__ = [
    "SECURITY_MODES",
    "MailError",
    "MailMessage",
    "Mailer",
    "OutboxMailer",
    "SmtpMailer",
    "build_mailer",
]

_log = logging.getLogger("bastion.mail")

SECURITY_MODES = frozenset({"starttls", "tls", "none"})

# Every character str.splitlines() breaks on, plus NUL: CR/LF are the classic header
# injection, but the others have also been turned into header breaks by mail libraries.
_LINE_BREAKS = frozenset("\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029\x00")


class MailError(Exception):
    """Signal that a message could not be handed to the mail server."""


@dataclass(frozen=True)
class MailMessage:
    """Hold one plain-text message to a single recipient."""

    to: str
    subject: str
    body: str


class Mailer(Protocol):
    """Deliver mail; implemented by SmtpMailer and OutboxMailer."""

    def send(self, message: MailMessage) -> None:
        """Deliver one message or raise."""
        ...


def _reject_line_breaks(field: str, value: str) -> None:
    """Raise ValueError if a header value could start a new header line."""
    if any(char in _LINE_BREAKS for char in value):
        # The value is not echoed: it is usually user input and would end up in logs.
        raise ValueError(f"mail {field} must not contain line breaks")


def _parse_address(field: str, value: str) -> Address:
    """Parse a bare addr-spec (one address, no display name) or raise ValueError."""
    _reject_line_breaks(field, value)
    try:
        return Address(addr_spec=value)
    except (ValueError, errors.HeaderParseError) as exc:
        # A bare addr-spec rules out "a@x, b@y" lists, so one message reaches one person.
        raise ValueError(f"mail {field} must be a single email address") from exc


def _parse_sender(sender: str) -> Address:
    """Parse a From value such as "Bastion <noreply@example.com>" into its address."""
    _reject_line_breaks("sender", sender)
    _name, addr_spec = parseaddr(sender)
    return _parse_address("sender", addr_spec)


def _compose(message: MailMessage, sender: str, sender_domain: str) -> EmailMessage:
    """Build the RFC 5322 message, refusing header injection before anything is built."""
    _reject_line_breaks("subject", message.subject)
    _parse_address("to", message.to)
    # policy.SMTP also raises on CR/LF in header values (ASVS 1.3.11) and emits CRLF line
    # endings, as RFC 5322 requires on the wire and in .eml files.
    mime = EmailMessage(policy=policy.SMTP)
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(usegmt=True)
    # An explicit domain avoids make_msgid's getfqdn(): a DNS lookup that can stall and
    # leaks the server's internal host name into every message.
    mime["Message-ID"] = make_msgid(domain=sender_domain)
    mime.set_content(message.body)
    return mime


def _log_sent(message: MailMessage, backend: str) -> None:
    """Record a delivery without the body, which carries one-time links and tokens."""
    _log.info(
        "mail sent",
        extra={
            "to_domain": message.to.rpartition("@")[2].lower(),
            "subject": message.subject,
            "backend": backend,
        },
    )


class SmtpMailer:
    """Send mail through an SMTP server, verifying its certificate unless security is none."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        cafile: str | None = None,
    ) -> None:
        """Validate the settings so a misconfiguration fails at start-up, not at first send."""
        if security not in SECURITY_MODES:
            raise ValueError(f"SMTP security must be one of {sorted(SECURITY_MODES)}")
        if username and security == "none":
            # Refuse rather than send the SMTP password in clear text over the network.
            raise ValueError("SMTP login needs security 'starttls' or 'tls'")
        if timeout <= 0:
            # 0 would make the socket non-blocking; a request must never hang on mail.
            raise ValueError("SMTP timeout must be positive")
        self._host = host
        self._port = port
        self._sender = sender
        sender_address = _parse_sender(sender)
        self._envelope_from = sender_address.addr_spec
        self._sender_domain = sender_address.domain
        self._security = security
        self._username = username or None
        self._password = password
        self._timeout = timeout
        # create_default_context() verifies the chain and the host name; a cafile replaces
        # the system store (tests, private relays) but never turns verification off.
        self._context: ssl.SSLContext | None = (
            None if security == "none" else ssl.create_default_context(cafile=cafile)
        )

    def __repr__(self) -> str:
        """Describe the mailer without credentials."""
        return f"SmtpMailer(host={self._host!r}, port={self._port}, security={self._security!r})"

    def _connect(self) -> smtplib.SMTP:
        """Open the connection, with implicit TLS when configured."""
        if self._security == "tls":
            return smtplib.SMTP_SSL(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        return smtplib.SMTP(self._host, self._port, timeout=self._timeout)

    def send(self, message: MailMessage) -> None:
        """Send one message, raising MailError if the server cannot take it."""
        mime = _compose(message, self._sender, self._sender_domain)
        try:
            with self._connect() as smtp:
                if self._security == "starttls":
                    # smtplib raises if STARTTLS is not offered, so a stripped capability
                    # list cannot silently downgrade us to plain text.
                    smtp.starttls(context=self._context)
                if self._username is not None:
                    smtp.login(self._username, self._password or "")
                # Explicit envelope: recipients come from the validated address, never
                # from headers.
                smtp.send_message(mime, from_addr=self._envelope_from, to_addrs=[message.to])
        except (smtplib.SMTPException, OSError) as exc:
            # Only the exception type goes in the message; the cause stays chained for
            # debugging and smtplib never puts the password in its exceptions.
            raise MailError(
                f"sending mail via {self._host}:{self._port} failed: {type(exc).__name__}"
            ) from exc
        _log_sent(message, "smtp")


class OutboxMailer:
    """Write each message as an .eml file into a private directory instead of sending it."""

    def __init__(self, directory: Path, *, sender: str) -> None:
        """Create the outbox directory readable only by this user."""
        self._directory = directory
        self._sender = sender
        self._sender_domain = _parse_sender(sender).domain
        # 0700 because the messages hold password-reset and verification links.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def directory(self) -> Path:
        """Return the outbox directory."""
        return self._directory

    def send(self, message: MailMessage) -> None:
        """Write one message atomically so readers never see a half-written file."""
        mime = _compose(message, self._sender, self._sender_domain)
        # Fixed-width UTC timestamp first so sorting names sorts by age; the random suffix
        # keeps two messages in the same microsecond apart.
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self._directory / f"{stamp}-{secrets.token_hex(8)}.eml"
        # mkstemp creates the file 0600; the leading dot and .tmp suffix hide it from
        # messages() until os.replace publishes it under its final name.
        fd, tmp_name = tempfile.mkstemp(dir=self._directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(mime.as_bytes())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _log_sent(message, "outbox")

    def messages(self) -> list[EmailMessage]:
        """Parse every message in the outbox, oldest first."""
        parser = BytesParser(_class=EmailMessage, policy=policy.default)
        return [
            parser.parsebytes(path.read_bytes()) for path in sorted(self._directory.glob("*.eml"))
        ]


def build_mailer(
    *,
    smtp_host: str | None,
    smtp_port: int,
    smtp_security: str,
    smtp_username: str | None,
    smtp_password: str | None,
    smtp_timeout: float,
    sender: str,
    outbox_dir: Path,
) -> Mailer:
    """Return an SmtpMailer when a server is configured, else an OutboxMailer."""
    if not smtp_host:
        # Loud on purpose: in production this means no user ever receives mail.
        _log.warning(
            "no SMTP server configured; mail goes to the outbox",
            extra={"outbox": str(outbox_dir)},
        )
        return OutboxMailer(outbox_dir, sender=sender)
    return SmtpMailer(
        host=smtp_host,
        port=smtp_port,
        sender=sender,
        security=smtp_security,
        username=smtp_username,
        password=smtp_password,
        timeout=smtp_timeout,
    )
