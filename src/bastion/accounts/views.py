"""Account pages. Views stay thin: parse the form, call the service, render."""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from bastion.accounts import service
from bastion.accounts.forms import (
    ChangePasswordForm,
    ConfirmForm,
    LoginForm,
    LogoutForm,
    ReauthForm,
    RegisterForm,
    SetupForm,
)
from bastion.accounts.models import User
from bastion.audit import EventTag, record
from bastion.core.db import db
from bastion.core.mail import Mailer
from bastion.security import sessions
from bastion.security.identity import current_actor
from bastion.security.permissions import is_privileged
from bastion.security.policy import login_required, public
from bastion.security.redirects import safe_next
from bastion.settings import Registration, Settings

bp = Blueprint("accounts", __name__, template_folder="templates")

LOGIN_FAILED = "Invalid email or password."  # one message for every failure (OWASP Auth CS)


def _settings() -> Settings:
    found: Settings = current_app.extensions["bastion.settings"]
    return found


def _site() -> service.Site:
    settings = _settings()
    return service.Site(settings.public_url, settings.password_min_length)


def _mailer() -> Mailer:
    found: Mailer = current_app.extensions["bastion.mailer"]
    return found


def _no_referrer(response: Response) -> Response:
    # Pages reached through a one-time link keep the token out of any Referer.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# ---------------------------------------------------------------------- register
@bp.route("/auth/register", methods=["GET", "POST"])
@public
def register() -> Response | tuple[str, int]:
    mode = _settings().registration
    invite_token = request.args.get("invite")
    if invite_token is not None and mode is not Registration.CLOSED:
        return _accept_invite(invite_token)
    if mode is not Registration.OPEN:
        page = render_template("accounts/registration_closed.html", mode=mode.value)
        return page, HTTPStatus.FORBIDDEN
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            email = service.normalise_email(form.email.data)
        except service.AccountError as exc:
            form.email.errors.append(str(exc))
        else:
            name = form.name.data.strip()
            problems = service.password_problems(
                form.password.data, email=email, name=name, site=_site()
            )
            if problems:
                form.password.errors.extend(problems)
            else:
                service.register(
                    email=email,
                    name=name,
                    password=form.password.data,
                    actor=current_actor(),
                    mailer=_mailer(),
                    site=_site(),
                )
                return redirect(url_for("accounts.check_email"), code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/register.html", form=form), status


def _accept_invite(token: str) -> Response:
    """Register through an admin's invitation: the invited address is already proven."""
    try:
        invited = service.check_invite(token)
    except service.AccountError as exc:
        page = render_template("accounts/invite.html", form=None, error=str(exc))
        return _no_referrer(Response(page, HTTPStatus.BAD_REQUEST))
    form = RegisterForm(data={"email": invited} if request.method == "GET" else None)
    status = HTTPStatus.OK
    if form.validate_on_submit():
        try:
            service.accept_invite(
                token,
                name=form.name.data,
                password=form.password.data,
                actor=current_actor(),
                site=_site(),
            )
        except service.AccountError as exc:
            form.password.errors.append(str(exc))
        else:
            flash("Your account is ready. You can sign in now.", "success")
            return redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
    if form.is_submitted():
        status = HTTPStatus.BAD_REQUEST
    page = render_template("accounts/invite.html", form=form, error=None, email=invited)
    return _no_referrer(Response(page, status))


@bp.route("/auth/check-email")
@public
def check_email() -> str:
    return render_template("accounts/check_email.html")


@bp.route("/auth/confirm/<token>", methods=["GET", "POST"])
@public
def confirm(token: str) -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            service.confirm(token, current_actor())
        except service.AccountError as exc:
            page = render_template("accounts/confirm.html", form=None, error=str(exc))
            return _no_referrer(Response(page, HTTPStatus.BAD_REQUEST))
        flash("Your account is confirmed. You can sign in now.", "success")
        return redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
    try:
        service.check_confirmation(token)
    except service.AccountError as exc:
        page = render_template("accounts/confirm.html", form=None, error=str(exc))
        return _no_referrer(Response(page, HTTPStatus.BAD_REQUEST))
    return _no_referrer(Response(render_template("accounts/confirm.html", form=form, error=None)))


# ------------------------------------------------------------------- login/logout
@bp.route("/auth/login", methods=["GET", "POST"])
@public
def login() -> Response | tuple[str, int]:
    form = LoginForm()
    if form.validate_on_submit():
        actor = current_actor()
        user = service.authenticate(form.email.data, form.password.data, actor)
        if user is not None and user.confirmed_at is None:
            # The password was right, so telling its owner to confirm reveals nothing new.
            service.resend_confirmation(user, _mailer(), _site())
            form.email.errors.append(
                "Confirm your email address first: we have sent you a new link."
            )
        elif user is not None:
            remember = bool(form.remember.data) and not is_privileged(user.role)
            return _finish_password_login(user, remember=remember)
        else:
            form.form_errors.append(LOGIN_FAILED)
    status = HTTPStatus.UNAUTHORIZED if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/login.html", form=form), status


def _finish_password_login(user: User, *, remember: bool) -> Response:
    """The password is proven: sign in (the second-factor step hooks in here)."""
    _sign_in(user, remember=remember)
    service.record_login(user, current_actor(), remember=remember)
    target = safe_next(request.args.get("next"), url_for("web.home"))
    return redirect(target, code=HTTPStatus.SEE_OTHER)


def _sign_in(user: User, *, remember: bool) -> None:
    # ASVS 7.2.4: a new session id at login; the pre-login session (and its data) is gone.
    sessions.start_authenticated_session(user.id, remember=remember)
    login_user(user, remember=False, fresh=True)


@bp.route("/auth/logout", methods=["POST"])
@public
def logout() -> Response:
    form = LogoutForm()
    if not form.validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    if current_user.is_authenticated:
        record(EventTag.LOGOUT, current_actor(), target=current_user.email)
        db.session.commit()
        logout_user()
    sessions.end_session()
    response = redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
    # OWASP Session Management CS: clear what the browser kept of this session.
    response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    return response


@bp.route("/auth/reauth", methods=["GET", "POST"])
@login_required
def reauth() -> Response | tuple[str, int]:
    """Prove the password again before a sensitive action (ASVS 7.5.1)."""
    form = ReauthForm()
    target = safe_next(request.args.get("next"), url_for("web.home"))
    if form.validate_on_submit():
        user: User = current_user._get_current_object()
        if service.reauthenticate(user, form.password.data, current_actor()):
            sessions.mark_reauthenticated()
            return redirect(target, code=HTTPStatus.SEE_OTHER)
        form.password.errors.append("That password is not correct.")
    status = HTTPStatus.UNAUTHORIZED if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/reauth.html", form=form), status


# ------------------------------------------------------------------------ account
@bp.route("/account/", methods=["GET", "POST"])
@login_required
def account() -> Response | tuple[str, int]:
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user: User = current_user._get_current_object()
        try:
            service.change_password(
                user,
                current=form.current_password.data,
                new=form.new_password.data,
                actor=current_actor(),
                site=_site(),
            )
        except service.AccountError as exc:
            form.new_password.errors.append(str(exc))
        else:
            # A password change ends every other session and remember-me token (ASVS 7.4.3)
            # and gives this one a new id.
            sessions.revoke_user_sessions(user.id, keep_current=True)
            sessions.rotate_session_id()
            flash("Your password has been changed. Other sessions were signed out.", "success")
            return redirect(url_for("accounts.account"), code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/account.html", form=form), status


# -------------------------------------------------------------------- first admin
@bp.route("/setup/<token>", methods=["GET", "POST"])
@public
def setup(token: str) -> Response:
    try:
        service.check_setup_token(token)
    except service.AccountError as exc:
        page = render_template("accounts/setup.html", form=None, error=str(exc))
        return _no_referrer(Response(page, HTTPStatus.NOT_FOUND))
    form = SetupForm()
    status = HTTPStatus.OK
    if form.validate_on_submit():
        try:
            service.setup_admin(
                token,
                email=form.email.data,
                name=form.name.data,
                password=form.password.data,
                actor=current_actor(),
                site=_site(),
            )
        except service.AccountError as exc:
            form.password.errors.append(str(exc))
        else:
            flash("The administrator account is ready. Sign in to continue.", "success")
            return redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
    if form.is_submitted():
        status = HTTPStatus.BAD_REQUEST
    page = render_template("accounts/setup.html", form=form, error=None)
    return _no_referrer(Response(page, status))
