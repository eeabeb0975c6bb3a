"""`bastion audit …`: verify the hash chain and prune old events."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import click
from flask.cli import with_appcontext

from bastion.audit import chain
from bastion.audit.events import Actor
from bastion.core.clock import utcnow

ANCHOR_RE = re.compile(r"^(\d+):([0-9a-f]{64})$")

audit = click.Group("audit", help="Verify and prune the tamper-evident audit log.")


def _anchor(_: click.Context, __: click.Parameter, value: str | None) -> chain.Anchor | None:
    if value is None:
        return None
    match = ANCHOR_RE.match(value.strip().lower())
    if match is None:
        raise click.BadParameter("expected SEQ:HASH, e.g. 42:<64 hex digits>")
    return chain.Anchor(int(match.group(1)), match.group(2), "--anchor")


@audit.command("verify")
@click.option(
    "--anchor",
    callback=_anchor,
    metavar="SEQ:HASH",
    help="A head printed by an earlier verify and kept outside the database; it must still hold.",
)
@with_appcontext
def verify(anchor: chain.Anchor | None) -> None:
    """Walk the chain; print `ok: …` or the first broken row and exit 1."""
    result = chain.verify_chain(anchor=anchor)
    if not result.ok:
        click.echo(f"FAILED {result.detail}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(result.detail)


@audit.command("prune")
@click.option(
    "--before",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Delete events recorded before this day (UTC), YYYY-MM-DD.",
)
@with_appcontext
def prune(before: datetime) -> None:
    """Delete old events, leaving a checkpoint so the rest still verifies."""
    cutoff = before.replace(tzinfo=UTC)
    if cutoff > utcnow():
        raise click.BadParameter("may not lie in the future", param_hint="--before")
    try:
        done = chain.prune(cutoff, Actor.system())
    except chain.PruneRefused as refused:
        click.echo(f"FAILED refusing to prune a chain that does not verify: {refused}", err=True)
        raise click.exceptions.Exit(1) from None
    if done.pruned == 0:
        click.echo(f"nothing recorded before {cutoff.date().isoformat()}")
    else:
        click.echo(
            f"pruned {done.pruned} events (through seq {done.through_seq});"
            f" checkpoint seq {done.checkpoint_seq}"
        )
    if done.verification is not None:
        click.echo(done.verification.detail)
        if not done.verification.ok:
            raise click.exceptions.Exit(1)
