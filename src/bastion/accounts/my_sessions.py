"""My sessions: every signed-in session of the current user, and ending them.

A session is named by its stored key (the SHA-256 of its id), never by the id itself. A
key that is not one of the caller's own live sessions is a 404, whoever it belongs to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from bastion.accounts.forms import ButtonForm
from bastion.accounts.user_agents import describe
from bastion.accounts.views import bp
from bastion.audit import EventTag, record
from bastion.core.db import db
from bastion.security import sessions
from bastion.security.freshness import is_fresh, recent_auth_required
from bastion.security.identity import current_actor
from bastion.security.policy import login_required

SESSION_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SessionRow:
    key: str
    device: str
    ip: str
    created_at: datetime
    last_seen_at: datetime
    current: bool


def _rows(user_id: int) -> list[SessionRow]:
    current = sessions.current_session_key()
    return [
        SessionRow(
            key=r.key,
            device=describe(r.user_agent),
            ip=r.ip or "unknown",
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            current=r.key == current,
        )
        for r in sessions.list_user_sessions(user_id)
    ]


@bp.route("/account/sessions")
@login_required
def my_sessions() -> str:
    rows = _rows(int(current_user.id))
    return render_template("accounts/sessions.html", rows=rows, button=ButtonForm())


@bp.route("/account/sessions/<key>/revoke", methods=["POST"])
@login_required
def revoke_my_session(key: str) -> Response:
    form = ButtonForm()
    if not form.validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    user_id = int(current_user.id)
    # Load and authorise in one step: only a live session of mine is found at all.
    mine = {row.key: row for row in _rows(user_id)} if SESSION_KEY.fullmatch(key) else {}
    row = mine.get(key)
    if row is None:
        abort(HTTPStatus.NOT_FOUND)
    if not row.current and not is_fresh():
        # Ending another device's session needs a recent password (ASVS 7.5.2), so a
        # stolen or forgotten-open session can't sign its owner's devices out; ending
        # this one is a sign-out and needs none. Back to the list, not to this POST URL.
        back = url_for("accounts.my_sessions")
        return redirect(url_for("accounts.reauth", next=back), code=HTTPStatus.SEE_OTHER)
    record(
        EventTag.SESSION_REVOKE,
        current_actor(),
        target=current_user.email,
        details={"session": key[:12], "ip": row.ip, "current": row.current},
    )
    db.session.commit()
    if row.current:
        logout_user()
        sessions.end_session()
        response = redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
        response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
        return response
    sessions.revoke_session(key)
    flash("That session has been signed out.", "success")
    return redirect(url_for("accounts.my_sessions"), code=HTTPStatus.SEE_OTHER)


@bp.route("/account/sessions/revoke-others", methods=["GET", "POST"])
@login_required
@recent_auth_required
def revoke_other_sessions() -> Response | tuple[str, int]:
    form = ButtonForm()
    if form.validate_on_submit():
        user_id = int(current_user.id)
        ended = sessions.revoke_user_sessions(user_id, keep_current=True)
        record(
            EventTag.SESSIONS_REVOKE_OTHERS,
            current_actor(),
            target=current_user.email,
            details={"sessions": ended},
        )
        db.session.commit()
        flash(f"Signed out {ended} other session(s).", "success")
        return redirect(url_for("accounts.my_sessions"), code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/sessions_revoke_others.html", form=form), status
