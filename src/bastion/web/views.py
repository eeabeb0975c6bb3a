"""The signed-in home page, liveness and readiness."""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, current_app, jsonify, render_template
from sqlalchemy import text
from werkzeug.wrappers import Response

from bastion.core.db import db
from bastion.security.policy import login_required, public
from bastion.security.rate_limit import unlimited
from bastion.security.sessions import manager

bp = Blueprint("web", __name__, template_folder="templates")


@bp.route("/")
@login_required
def home() -> str:
    return render_template("web/home.html")


@bp.route("/healthz")
@public
@unlimited
def healthz() -> Response:
    """Liveness: the process answers. Touches no dependency."""
    return jsonify({"status": "ok"})


@bp.route("/readyz")
@public
@unlimited
def readyz() -> tuple[Response, int]:
    """Readiness: 200 only when the database (and Redis, if configured) answer."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # any failure means "not ready"; the type is logged, not shown
        db.session.rollback()
        checks["database"] = "unavailable"
    if current_app.extensions["bastion.settings"].redis_url:
        try:
            manager().store.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
    return jsonify({"status": "ok" if ready else "unavailable", "checks": checks}), status


# Views kept in their own module, registered on this blueprint (imported for that).
from bastion.web import csp_reports  # noqa: E402, F401
