"""Admin console pages. Views stay thin: parse, call the service, render.

Reading needs a permission; every action also needs a recent password login
(``@recent_auth_required``), is a CSRF-protected POST and writes an audit event. An action
URL opened with GET (e.g. on the way back from /auth/reauth) changes nothing and leads
back to the page the action lives on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bastion.accounts import service as accounts
from bastion.accounts.mfa_views import must_have_2fa
from bastion.admin import audit_log, dashboard, service
from bastion.admin.chart import hourly_bar_chart
from bastion.admin.forms import (
    ActionForm,
    AuditFilterForm,
    InviteForm,
    RoleForm,
    SessionFilterForm,
    UserSearchForm,
)
from bastion.core.clock import utcnow
from bastion.core.errors import error_response
from bastion.core.mail import Mailer
from bastion.core.pagination import PageError, page_number
from bastion.security import alerts, sessions
from bastion.security.freshness import recent_auth_required
from bastion.security.identity import current_actor
from bastion.security.permissions import Permission
from bastion.security.policy import requires
from bastion.settings import Registration, Settings

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

USER_ID = "int(min=1, max=2147483647)"  # ids beyond 32 bits never reach the database
PER_PAGE = 25
AUDIT_PER_PAGE = 50


@bp.context_processor
def _template_names() -> dict[str, Any]:
    return {"Permission": Permission}


def _page() -> int:
    try:
        return page_number(request.args.get("page"))
    except PageError:
        abort(HTTPStatus.BAD_REQUEST)


def _query_args(form: Any) -> dict[str, str]:
    """The filter values to carry into pagination and export links (validated ones only)."""
    return {name: request.args[name] for name in form.data if request.args.get(name)}


def _user_or_404(user_id: int) -> Any:
    return service.get_user(user_id)


def _not_found(error: service.NotFound) -> Response:
    """Unknown ids answer 404 here, once, rather than in every view (ASVS 8.2.2)."""
    return error_response(HTTPStatus.NOT_FOUND)


bp.register_error_handler(service.NotFound, _not_found)


def _see_other(endpoint: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **values), code=HTTPStatus.SEE_OTHER)


def _idle() -> timedelta:
    return sessions.manager().policy.idle


# ---------------------------------------------------------------------- dashboard
@bp.route("/")
@requires(Permission.ADMIN_CONSOLE)
def dashboard_page() -> str:
    data = dashboard.build(utcnow())
    peak_hour, peak = max(data.failures_by_hour, key=lambda item: item[1])
    summary = f"{data.failures_total} failed sign-ins in the last 7 days"
    if peak:
        summary += f"; at most {peak} in one hour ({peak_hour:%Y-%m-%d %H}:00 UTC)"
    chart = hourly_bar_chart(
        data.failures_by_hour,
        title="Failed sign-ins per hour, last 7 days (UTC)",
        description=summary + ".",
        element_id="failed-logins",
    )
    return render_template(
        "admin/dashboard.html",
        data=data,
        chart=chart,
        summary=summary,
        action_form=ActionForm(formdata=None),
        now=utcnow(),
    )


# -------------------------------------------------------------------------- users
@bp.route("/users")
@requires(Permission.ADMIN_USERS)
def users() -> tuple[str, int]:
    form = UserSearchForm(request.args)
    if not form.validate():
        return render_template("admin/users.html", form=form, page=None), HTTPStatus.BAD_REQUEST
    page = service.search_users(
        form.q.data or "",
        status=form.status.data,
        security=form.security.data,
        now=utcnow(),
        number=_page(),
        per_page=PER_PAGE,
    )
    args = _query_args(form)
    return render_template("admin/users.html", form=form, page=page, args=args), HTTPStatus.OK


def _user_page(
    user: Any,
    status: int = HTTPStatus.OK,
    *,
    role_form: RoleForm | None = None,
    error: str | None = None,
) -> tuple[str, int]:
    page = render_template(
        "admin/user.html",
        user=user,
        role_form=role_form or RoleForm(formdata=None, role=user.role),
        action_form=ActionForm(formdata=None),
        user_sessions=sessions.list_user_sessions(user.id),
        security=service.security_state(user.id, utcnow()),
        events=audit_log.about(user.email, limit=10),
        error=error,
    )
    return page, status


@bp.route(f"/users/<{USER_ID}:user_id>")
@requires(Permission.ADMIN_USERS)
def user_detail(user_id: int) -> tuple[str, int]:
    return _user_page(_user_or_404(user_id))


@bp.route(f"/users/<{USER_ID}:user_id>/role", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def change_role(user_id: int) -> Response | tuple[str, int]:
    user = _user_or_404(user_id)
    if request.method == "GET":
        return _see_other("admin.user_detail", user_id=user.id)
    form = RoleForm()
    if not form.validate_on_submit():
        return _user_page(user, HTTPStatus.BAD_REQUEST, role_form=form)
    try:
        changed = service.change_role(user.id, form.role.data, actor=current_actor())
    except service.Conflict as exc:
        return _user_page(_user_or_404(user_id), HTTPStatus.CONFLICT, error=str(exc))
    except service.AdminError as exc:
        return _user_page(_user_or_404(user_id), HTTPStatus.BAD_REQUEST, error=str(exc))
    if changed:
        flash(f"Role changed to {form.role.data}; the user's sessions were ended.", "success")
    else:
        flash("The role was already set; nothing changed.", "info")
    return _see_other("admin.user_detail", user_id=user_id)


def _set_active(user_id: int, active: bool) -> Response | tuple[str, int]:
    user = _user_or_404(user_id)
    if request.method == "GET":
        return _see_other("admin.user_detail", user_id=user.id)
    if not ActionForm().validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    try:
        changed = service.set_active(user.id, active, actor=current_actor())
    except service.Conflict as exc:
        return _user_page(_user_or_404(user_id), HTTPStatus.CONFLICT, error=str(exc))
    if not changed:
        flash("Nothing changed: the account already was in that state.", "info")
    elif active:
        flash("The account is enabled.", "success")
    else:
        flash("The account is disabled and all its sessions were ended.", "success")
    return _see_other("admin.user_detail", user_id=user_id)


@bp.route(f"/users/<{USER_ID}:user_id>/disable", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def disable_user(user_id: int) -> Response | tuple[str, int]:
    return _set_active(user_id, False)


@bp.route(f"/users/<{USER_ID}:user_id>/enable", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def enable_user(user_id: int) -> Response | tuple[str, int]:
    return _set_active(user_id, True)


@bp.route(f"/users/<{USER_ID}:user_id>/sessions/revoke", methods=["GET", "POST"])
@requires(Permission.ADMIN_SESSIONS)
@recent_auth_required
def revoke_user_sessions(user_id: int) -> Response:
    user = _user_or_404(user_id)
    if request.method == "GET":
        return _see_other("admin.user_detail", user_id=user.id)
    if not ActionForm().validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    ended = service.revoke_sessions(user.id, actor=current_actor())
    flash(f"{ended} session(s) ended; remember-me tokens revoked.", "success")
    return _see_other("admin.user_detail", user_id=user_id)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["bastion.settings"]
    return settings


def _post_action(user_id: int) -> Any:
    """The user for a POSTed action (404 when unknown); None when it was a GET (no change)."""
    user = _user_or_404(user_id)
    if request.method == "GET":
        return None
    if not ActionForm().validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    return user


def _refused(user_id: int, exc: service.AdminError) -> tuple[str, int]:
    status = HTTPStatus.CONFLICT if isinstance(exc, service.Conflict) else HTTPStatus.BAD_REQUEST
    return _user_page(_user_or_404(user_id), status, error=str(exc))


@bp.route(f"/users/<{USER_ID}:user_id>/unlock", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def unlock_user(user_id: int) -> Response | tuple[str, int]:
    user = _post_action(user_id)
    if user is None:
        return _see_other("admin.user_detail", user_id=user_id)
    changed = service.unlock(user.id, actor=current_actor(), now=utcnow())
    if changed:
        flash("The account is unlocked and its failure count cleared.", "success")
    else:
        flash("Nothing changed: the account was not locked.", "info")
    return _see_other("admin.user_detail", user_id=user_id)


@bp.route(f"/users/<{USER_ID}:user_id>/2fa/reset", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def reset_2fa(user_id: int) -> Response | tuple[str, int]:
    user = _post_action(user_id)
    if user is None:
        return _see_other("admin.user_detail", user_id=user_id)
    must_enrol = must_have_2fa(user.role, _settings().require_2fa)
    try:
        changed = service.reset_2fa(user.id, actor=current_actor(), must_enrol=must_enrol)
    except service.AdminError as exc:
        return _refused(user_id, exc)
    if not changed:
        flash("Nothing changed: two-factor authentication was not on.", "info")
    elif must_enrol:
        flash("2FA was reset and the user signed out; they must enrol again.", "success")
    else:
        flash("2FA was reset and the user signed out everywhere.", "success")
    return _see_other("admin.user_detail", user_id=user_id)


@bp.route(f"/users/<{USER_ID}:user_id>/password/reset", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def force_password_reset(user_id: int) -> Response | tuple[str, int]:
    user = _post_action(user_id)
    if user is None:
        return _see_other("admin.user_detail", user_id=user_id)
    settings = _settings()
    try:
        message = service.force_password_reset(
            user.id,
            actor=current_actor(),
            site=accounts.Site(settings.public_url, settings.password_min_length),
        )
    except service.AdminError as exc:
        return _refused(user_id, exc)
    mailer: Mailer = current_app.extensions["bastion.mailer"]
    mailer.send(message)
    flash(
        "The password no longer works, the user was signed out everywhere and was mailed "
        "a link to choose a new one.",
        "success",
    )
    return _see_other("admin.user_detail", user_id=user_id)


@bp.route("/alerts/<int(min=1, max=2147483647):alert_id>/ack", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def acknowledge_alert(alert_id: int) -> Response:
    if alerts.get_alert(alert_id) is None:
        abort(HTTPStatus.NOT_FOUND)
    if request.method == "GET":
        return _see_other("admin.dashboard_page")
    if not ActionForm().validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    changed = service.acknowledge_alert(alert_id, actor=current_actor(), now=utcnow())
    if changed:
        flash("Alert acknowledged.", "success")
    else:
        flash("That alert was already acknowledged.", "info")
    return _see_other("admin.dashboard_page", _anchor="alerts-heading")


@bp.route("/users/invite", methods=["GET", "POST"])
@requires(Permission.ADMIN_USERS)
@recent_auth_required
def invite() -> Response | tuple[str, int]:
    form = InviteForm()
    status = HTTPStatus.OK
    if form.validate_on_submit():
        settings: Settings = current_app.extensions["bastion.settings"]
        mailer: Mailer = current_app.extensions["bastion.mailer"]
        try:
            address = service.invite(
                form.email.data,
                actor=current_actor(),
                mailer=mailer,
                site=accounts.Site(settings.public_url, settings.password_min_length),
                accepted=settings.registration is not Registration.CLOSED,
            )
        except service.Conflict as exc:
            form.email.errors.append(str(exc))
            status = HTTPStatus.CONFLICT
        except service.AdminError as exc:
            form.email.errors.append(str(exc))
            status = HTTPStatus.BAD_REQUEST
        else:
            flash(f"Invitation sent to {address}. The link works once, for 7 days.", "success")
            return _see_other("admin.invite")
    elif form.is_submitted():
        status = HTTPStatus.BAD_REQUEST
    return render_template("admin/invite.html", form=form), status


# ----------------------------------------------------------------------- sessions
@bp.route("/sessions")
@requires(Permission.ADMIN_SESSIONS)
def sessions_page() -> tuple[str, int]:
    form = SessionFilterForm(request.args)
    context: dict[str, Any] = {"form": form, "page": None, "owner": None, "missing": False}
    if not form.validate():
        return render_template("admin/sessions.html", **context), HTTPStatus.BAD_REQUEST
    user_id = None
    if form.email.data:
        try:
            owner = accounts.find_by_email(accounts.normalise_email(form.email.data))
        except accounts.AccountError:
            owner = None
        if owner is None:
            context["missing"] = True
            return render_template("admin/sessions.html", **context), HTTPStatus.OK
        context["owner"], user_id = owner, owner.id
    context["page"] = service.list_sessions(
        sessions.manager().store,
        idle=_idle(),
        now=utcnow(),
        user_id=user_id,
        number=_page(),
        per_page=PER_PAGE,
    )
    context["args"] = _query_args(form)
    context["current_key"] = sessions.current_session_key()
    context["action_form"] = ActionForm(formdata=None)
    return render_template("admin/sessions.html", **context), HTTPStatus.OK


@bp.route("/sessions/<string(length=64):key>/revoke", methods=["GET", "POST"])
@requires(Permission.ADMIN_SESSIONS)
@recent_auth_required
def revoke_session(key: str) -> Response:
    if request.method == "GET":
        service.get_session(key, store=sessions.manager().store, idle=_idle(), now=utcnow())
        return _see_other("admin.sessions_page")
    if not ActionForm().validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    try:
        email = service.revoke_session(
            key,
            actor=current_actor(),
            store=sessions.manager().store,
            idle=_idle(),
            now=utcnow(),
            current_key=sessions.current_session_key(),
        )
    except service.Conflict as exc:
        flash(str(exc), "error")
        return _see_other("admin.sessions_page")
    flash(f"The session of {email} was ended.", "success")
    return _see_other("admin.sessions_page")


# -------------------------------------------------------------------------- audit
def _audit_filters(form: AuditFilterForm) -> audit_log.AuditFilters:
    def utc(value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None

    return audit_log.AuditFilters(
        actor=(form.actor.data or "").strip(),
        event=form.event.data or "",
        outcome=form.outcome.data or "",
        ip=(form.ip.data or "").strip(),
        since=utc(form.since.data),
        until=utc(form.until.data),
    )


@bp.route("/audit")
@requires(Permission.AUDIT_READ)
def audit() -> tuple[str, int]:
    form = AuditFilterForm(request.args)
    if not form.validate():
        return render_template("admin/audit.html", form=form, page=None), HTTPStatus.BAD_REQUEST
    page = audit_log.search(_audit_filters(form), number=_page(), per_page=AUDIT_PER_PAGE)
    args = _query_args(form)
    return render_template("admin/audit.html", form=form, page=page, args=args), HTTPStatus.OK


@bp.route("/audit.csv")
@requires(Permission.AUDIT_READ)
def audit_csv() -> Response:
    form = AuditFilterForm(request.args)
    if not form.validate():
        abort(HTTPStatus.BAD_REQUEST)
    body = audit_log.export_csv(_audit_filters(form), actor=current_actor())
    name = f"bastion-audit-{utcnow():%Y%m%dT%H%M%SZ}.csv"
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
