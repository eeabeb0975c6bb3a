"""`bastion storage gc`: finish what interrupted uploads and deletes left behind."""

from __future__ import annotations

from datetime import timedelta

import click
from flask import current_app
from flask.cli import with_appcontext

storage = click.Group("storage", help="Document storage maintenance.")


@storage.command("gc")
@click.option(
    "--grace-minutes",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="Leave temp files and unreferenced objects younger than this (uploads in flight).",
)
@with_appcontext
def gc(grace_minutes: int) -> None:
    """Remove stale upload temp files, purge deleted documents, drop unreferenced objects."""
    from bastion.documents import service
    from bastion.documents.upload_stream import VAULT_KEY

    vault: service.Vault = current_app.extensions[VAULT_KEY]
    report = service.gc(vault, grace=timedelta(minutes=grace_minutes))
    click.echo(
        f"removed {report.temp_files} temp files, purged {report.purged} deleted documents, "
        f"removed {report.orphans} unreferenced objects"
    )
