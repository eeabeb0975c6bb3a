"""The `bastion` console script: a Flask CLI group over `create_app`."""

from __future__ import annotations

import sys

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from bastion.audit import Actor, EventTag, record
from bastion.audit.cli import audit
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.documents.cli import storage as storage_group
from bastion.security.permissions import Role
from bastion.serving.command import serve


def _create_app() -> Flask:
    from bastion.app import create_app, enable_migrations

    app = create_app()
    enable_migrations(app)
    return app


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False)
def main() -> None:
    """Manage a Bastion installation (run from the directory that holds `instance/`)."""


users = click.Group("users", help="Create and list accounts.")


@users.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.USER.value)
@with_appcontext
def users_create(email: str, name: str, role: str) -> None:
    """Create a confirmed account; the password is read from standard input."""
    from bastion.accounts import service

    password = sys.stdin.readline().rstrip("\n")
    settings = current_app.extensions["bastion.settings"]
    site = service.Site(settings.public_url, settings.password_min_length)
    try:
        user = service.create_user(
            email=email, name=name, password=password, role=role, actor=Actor.system(), site=site
        )
    except service.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {user.email} ({user.role})")


@users.command("invite")
@click.option("--email", required=True)
@with_appcontext
def users_invite(email: str) -> None:
    """Mail a single-use, 7-day invitation to register."""
    from bastion.accounts import service

    settings = current_app.extensions["bastion.settings"]
    site = service.Site(settings.public_url, settings.password_min_length)
    try:
        service.issue_invite(
            email, actor=Actor.system(), mailer=current_app.extensions["bastion.mailer"], site=site
        )
    except service.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"invitation sent to {email}")


@users.command("list")
@with_appcontext
def users_list() -> None:
    """List accounts: email, role, state."""
    from bastion.accounts.models import User

    for user in db.session.scalars(select(User).order_by(User.id)):
        state = "active" if user.active else "disabled"
        if user.confirmed_at is None:
            state += ",unconfirmed"
        click.echo(f"{user.id}\t{user.email}\t{user.role}\t{state}")


sessions_group = click.Group("sessions", help="Server-side session maintenance.")


@sessions_group.command("purge")
@with_appcontext
def sessions_purge() -> None:
    """Delete expired sessions (Redis expires its own) and spent one-time tokens past their
    lifetime."""
    from bastion.security import tokens
    from bastion.security.sessions import manager

    policy = manager().policy
    now = utcnow()
    removed = manager().store.purge_expired(now, int(policy.idle.total_seconds()))
    spent = tokens.purge_spent(now)
    click.echo(f"removed {removed} expired sessions and {spent} spent one-time tokens")


@sessions_group.command("revoke-all")
@click.confirmation_option(
    prompt="End every signed-in session and remember-me token of every user?"
)
@with_appcontext
def sessions_revoke_all() -> None:
    """End every user's sessions and remember-me tokens (incident response, ASVS 7.4.5).

    Everyone signs in again with their password and second factor. Anonymous sessions hold
    no one's identity and are left to expire.
    """
    from bastion.accounts.models import User
    from bastion.security.session_cache import TTL_SECONDS
    from bastion.security.sessions import revoke_user_sessions

    ended = sum(revoke_user_sessions(user_id) for user_id in db.session.scalars(select(User.id)))
    record(EventTag.SESSIONS_REVOKE_ALL, Actor.system(), details={"sessions": ended})
    db.session.commit()
    # An embedded server notices within its session copy's second (security/session_cache.py).
    click.echo(
        f"ended {ended} sessions; every user must sign in again "
        f"(a running server stops serving them within {TTL_SECONDS:g} s)"
    )


keys = click.Group("keys", help="Key rotation helpers.")


@keys.command("reencrypt")
@with_appcontext
def keys_reencrypt() -> None:
    """Re-encrypt every TOTP secret under the newest BASTION_DATA_KEY.

    Run after putting a new key first in BASTION_DATA_KEY; once it reports the count, the
    old key can be dropped from the list.
    """
    from bastion.accounts import mfa

    moved = mfa.reencrypt_all()
    click.echo(f"re-encrypted {moved} TOTP secrets under the newest data key")


main.add_command(users)
main.add_command(keys)
main.add_command(sessions_group)
main.add_command(audit)
main.add_command(serve)
main.add_command(storage_group)
