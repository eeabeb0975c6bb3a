"""`bastion serve`: prepare the instance, migrate, then hand over to gunicorn with TLS.

In order, so that nothing listens before the configuration is known to be safe:

1. instance folder (0700); on first run a secret key and a self-signed TLS pair (0600);
2. `Settings.check()` — an unsafe production configuration ends here with a one-line reason;
3. both ports are bound here, so a busy port is a one-line refusal too;
4. database migrations, and the one-time admin setup link on stdout (never in the log);
5. the plain-HTTP redirector starts as a child that dies with its parent (PR_SET_PDEATHSIG);
6. this process becomes the gunicorn master (``exec``): signals from the terminal, systemd
   or a container runtime reach gunicorn directly, and the redirector follows its exit.
"""

from __future__ import annotations

import ipaddress
import os
import socket

# Only ever runs our own interpreter with a fixed argv, never a shell.
import subprocess  # nosec B404
import sys
from collections.abc import Mapping, MutableMapping
from urllib.parse import urlsplit

import click

from bastion.serving.bootstrap import (
    DATA_KEY_FILE,
    SECRET_KEY_FILE,
    BootstrapError,
    ensure_data_key,
    ensure_private_dir,
    ensure_secret_key,
    ensure_tls_files,
    is_private,
)
from bastion.serving.net import ListenError, listen
from bastion.serving.process import PARENT_PID_ENV, REFUSAL, with_hugepage_tunable
from bastion.serving.tls import DEFAULT_HOSTS
from bastion.settings import Settings, SettingsError

MAIN_CONFIG = "python:bastion.serving.gunicorn_conf"
REDIRECT_CONFIG = "python:bastion.serving.redirect_conf"


class Refusal(Exception):
    """Serving is refused; the message is one line for the operator."""


def _refuse(reason: str) -> SystemExit:
    click.echo(REFUSAL + " ".join(reason.split()), err=True)
    return SystemExit(1)


def _note(message: str) -> None:
    click.echo(f"bastion: {message}", err=True)


def _from_env(environ: Mapping[str, str], name: str) -> bool:
    """True when the operator supplies secret `name` (BASTION_<NAME> or BASTION_<NAME>_FILE)."""
    return bool(environ.get(f"BASTION_{name}") or environ.get(f"BASTION_{name}_FILE"))


def _is_wildcard(host: str) -> bool:
    """True for "" and the unspecified addresses (listen on every interface)."""
    try:
        return not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _public_url(settings: Settings, environ: Mapping[str, str]) -> str:
    """BASTION_PUBLIC_URL, or the address we serve on when it is not set."""
    if environ.get("BASTION_PUBLIC_URL"):
        return settings.public_url
    host = "127.0.0.1" if _is_wildcard(settings.host) else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{settings.port}"


def prepare(environ: MutableMapping[str, str]) -> tuple[Settings, list[str]]:
    """Steps 1-2: the instance folder, first-run secrets and the production guards.

    Returns the checked settings and notes for the operator; updates `environ` with the
    resolved instance path and public URL so every process started later agrees.
    """
    settings = Settings.from_env(environ)
    notes: list[str] = []
    if ensure_private_dir(settings.instance_path):
        notes.append(f"created instance folder {settings.instance_path}")
    environ["BASTION_INSTANCE_PATH"] = str(settings.instance_path)
    # Keys the operator didn't supply are generated once in the instance folder, where
    # Settings.from_env() (and so every later `bastion` command) finds them. Not with a
    # shared database or Redis: every node must hold the same keys, and a key generated
    # here would exist on this node only (sessions and 2FA would break across nodes).
    shared = settings.redis_url is not None or not settings.is_sqlite
    generated = False
    for name, filename, ensure in (
        ("SECRET_KEY", SECRET_KEY_FILE, ensure_secret_key),
        ("DATA_KEY", DATA_KEY_FILE, ensure_data_key),
    ):
        key_file = settings.instance_path / filename
        if _from_env(environ, name) or key_file.exists():
            continue
        if shared:
            raise BootstrapError(
                f"BASTION_{name} is not set: with a shared database or Redis every node needs "
                f"the same key, so set BASTION_{name} or BASTION_{name}_FILE"
            )
        if ensure(settings.instance_path):
            notes.append(f"generated a {name.lower().replace('_', ' ')} in {key_file}")
            generated = True
    if generated:
        settings = Settings.from_env(environ)
    public_url = _public_url(settings, environ)
    environ["BASTION_PUBLIC_URL"] = public_url
    settings = settings.replace(public_url=public_url)
    settings.check()

    hosts = [*DEFAULT_HOSTS, urlsplit(settings.public_url).hostname or DEFAULT_HOSTS[0]]
    files, created = ensure_tls_files(settings.instance_path, environ, hosts)
    if created:
        notes.append(f"generated a self-signed TLS certificate in {files.cert.parent}")
    instance = settings.instance_path
    for path in (instance / SECRET_KEY_FILE, instance / DATA_KEY_FILE, files.key):
        if path.is_file() and not is_private(path):
            notes.append(f"warning: {path} is readable by other users; chmod 600 it")
    return settings, notes


def migrate_and_setup_link(settings: Settings) -> str | None:
    """Step 4: upgrade the schema; return the first-admin setup link if no admin exists."""
    from flask_migrate import upgrade
    from sqlalchemy.exc import SQLAlchemyError

    from bastion.accounts.service import Site, issue_setup_link
    from bastion.app import create_app, enable_migrations
    from bastion.core.db import db

    app = create_app(settings)
    enable_migrations(app)
    with app.app_context():
        try:
            upgrade()
            return issue_setup_link(Site(settings.public_url, settings.password_min_length))
        except SQLAlchemyError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise Refusal(f"database unavailable: {first_line or type(exc).__name__}") from None
        finally:
            db.session.remove()
            db.engine.dispose()


def start_redirector(sock: socket.socket, environ: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Step 5: the HTTP->HTTPS redirector on `sock`, a child that ends with this process."""
    fd = sock.fileno()
    argv = [sys.executable, "-m", "gunicorn", "-c", REDIRECT_CONFIG, "--bind", f"fd://{fd}"]
    env = {**environ, PARENT_PID_ENV: str(os.getpid())}
    # Fixed argv (our interpreter, gunicorn, our config), no shell.
    return subprocess.Popen(argv, env=env, pass_fds=(fd,), stdin=subprocess.DEVNULL)  # noqa: S603  # nosec B603


def exec_gunicorn(sock: socket.socket, environ: Mapping[str, str]) -> None:
    """Step 6: become the gunicorn master on the already-bound `sock`."""
    argv = [sys.executable, "-m", "gunicorn", "-c", MAIN_CONFIG, "--bind", f"fd://{sock.fileno()}"]
    sys.stdout.flush()
    sys.stderr.flush()
    # Fixed argv (our interpreter, gunicorn, our config), no shell.
    os.execve(sys.executable, argv, with_hugepage_tunable(environ))  # noqa: S606


@click.command("serve")
def serve() -> None:
    """Serve Bastion with gunicorn and TLS (the production configuration of `make run`)."""
    # Everything this process and the servers create (database, outbox, uploads) is private.
    os.umask(0o077)
    environ = dict(os.environ)
    try:
        settings, notes = prepare(environ)
        for note in notes:
            _note(note)
        main_sock = listen(settings.host, settings.port)
        redirect_sock = listen(settings.host, settings.http_port) if settings.http_port else None
        link = migrate_and_setup_link(settings)
    except (SettingsError, BootstrapError, ListenError, Refusal) as exc:
        raise _refuse(str(exc)) from None

    if link:
        click.echo(
            "\nBastion has no administrator yet. Open this one-time link within 1 hour to "
            f"create the first one:\n\n    {link}\n"
        )
    redirector = None
    if redirect_sock is not None:
        redirector = start_redirector(redirect_sock, environ)
        redirect_sock.close()  # the redirector owns it now; gunicorn must not inherit it
    try:
        exec_gunicorn(main_sock, environ)
    except OSError as exc:
        if redirector is not None:
            redirector.terminate()
            redirector.wait(timeout=10)
        raise _refuse(f"cannot start gunicorn: {exc.strerror}") from None


__all__ = ["prepare", "serve"]
