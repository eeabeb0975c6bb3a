"""Account pages. Views stay thin: parse the form, call the service, render."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import structlog
from flask import (
    Blueprint,
    abort,
    after_this_request,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from bastion.accounts import mfa, pending_login, service
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
from bastion.accounts.notifications import Notice, notify
from bastion.accounts.throttle import throttle_second_factor
from bastion.audit import EventTag, record
from bastion.core.db import db
from bastion.core.mail import Mailer, MailMessage
from bastion.security import devices, rate_limit, sessions
from bastion.security.freshness import is_fresh
from bastion.security.identity import current_actor
from bastion.security.lockout import LockoutPolicy
from bastion.security.permissions import is_privileged
from bastion.security.policy import login_required, public
from bastion.security.rate_limit import LimitName, ip_limited
from bastion.security.redirects import safe_next
from bastion.settings import Registration, Settings

bp = Blueprint("accounts", __name__, template_folder="templates")

log = structlog.get_logger("bastion.accounts")

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
@ip_limited(LimitName.IP_REGISTER)
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


def _one_time_link_form(
    template: str, form: RegisterForm, submit: Callable[[], object], *, done: str, **context: Any
) -> Response:
    """Show or submit the account form behind a one-time link (invitation, admin setup).

    A refused password keeps the link usable; success goes to sign-in with `done` flashed.
    """
    if form.validate_on_submit():
        try:
            submit()
        except service.AccountError as exc:
            form.password.errors.append(str(exc))
        else:
            flash(done, "success")
            return redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    page = render_template(template, form=form, error=None, **context)
    return _no_referrer(make_response(page, status))


def _accept_invite(token: str) -> Response:
    """Register through an admin's invitation: the invited address is already proven."""
    try:
        invited = service.check_invite(token)
    except service.AccountError as exc:
        page = render_template("accounts/invite.html", form=None, error=str(exc))
        return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
    form = RegisterForm(data={"email": invited} if request.method == "GET" else None)
    return _one_time_link_form(
        "accounts/invite.html",
        form,
        lambda: service.accept_invite(
            token,
            name=form.name.data,
            password=form.password.data,
            actor=current_actor(),
            site=_site(),
        ),
        done="Your account is ready. You can sign in now.",
        email=invited,
    )


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
            return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
        flash("Your account is confirmed. You can sign in now.", "success")
        return redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
    try:
        service.check_confirmation(token)
    except service.AccountError as exc:
        page = render_template("accounts/confirm.html", form=None, error=str(exc))
        return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
    return _no_referrer(
        make_response(render_template("accounts/confirm.html", form=form, error=None))
    )


# ------------------------------------------------------------------- login/logout
@bp.route("/auth/login", methods=["GET", "POST"])
@public
@ip_limited(LimitName.IP_LOGIN)
def login() -> Response | tuple[str, int]:
    form = LoginForm()
    if form.validate_on_submit():
        actor = current_actor()
        device = devices.current_device()
        user = service.authenticate(
            form.email.data,
            form.password.data,
            actor,
            device=device,
            mailer=_deferred_mailer(),
            site=_site(),
            policy=LockoutPolicy.from_settings(_settings()),
        )
        if user is not None and user.confirmed_at is None:
            # The password was right, so telling its owner to confirm reveals nothing new.
            if service.confirmation_mail_allowed(user.email, actor):
                service.resend_confirmation(user, _mailer(), _site())
            form.email.errors.append(
                "Confirm your email address first: we have sent you a new link."
            )
        elif user is not None:
            remember = bool(form.remember.data) and not is_privileged(user.role)
            known = device is not None and device.trusted_for(user.id)
            if not known:
                _notify_new_device(user)
            return _finish_password_login(user, remember=remember, device=device, known=known)
        else:
            form.form_errors.append(LOGIN_FAILED)
    status = HTTPStatus.UNAUTHORIZED if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/login.html", form=form), status


def _notify_new_device(user: User) -> None:
    """Tell the owner their password was just proven in a browser new to this account.

    Sent at the password step, before any second factor: whoever typed it knows the
    password, and the owner should hear of that even if the code stops them.
    """
    service.notify_new_device(
        user,
        actor=current_actor(),
        user_agent=request.user_agent.string,
        mailer=_deferred_mailer(),
        site=_site(),
    )


def _remember_device(
    response: Response, user: User, device: devices.Device | None, *, known: bool
) -> Response:
    """Give a browser that completed a sign-in (every factor) its device cookie.

    OWASP device cookies: the cookie lets its owner keep trying while the account is
    locked for everyone else (security/devices.py), so it is trust earned by a whole
    sign-in; a password alone must not buy the owner's exemption from the lockout.
    `known`: the browser's cookie already vouches for this user (it is re-signed, so its
    counts carry on); else a fresh one is issued.
    """
    if device is not None and known:
        value = device.cookie_value()  # known browser: extend it, under the current key
    else:
        value = devices.new_cookie_value(user.id)
    devices.set_device_cookie(response, value, _settings().device_cookie_days)
    return response


class _AfterResponseMailer:
    """Send once the response is handed over, so an SMTP round trip can't be timed.

    A lock notice goes out on one of a guesser's attempts; sending it inline would make
    that answer measurably slower for existing accounts (OWASP Authentication CS: timing).
    """

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    def send(self, message: MailMessage) -> None:
        mailer = self.mailer

        @after_this_request
        def _defer(response: Response) -> Response:
            response.call_on_close(lambda: _send_logged(mailer, message))
            return response


def _send_logged(mailer: Mailer, message: MailMessage) -> None:
    try:
        mailer.send(message)
    except Exception as exc:  # the answer is already sent; a lost notice is logged
        log.error("notice not sent", subject=message.subject, error_type=type(exc).__name__)


def _deferred_mailer() -> Mailer:
    return _AfterResponseMailer(_mailer())


@bp.route("/auth/unlock/<token>", methods=["GET", "POST"])
@public
def unlock(token: str) -> Response:
    """Lift a lock from the link mailed to the owner: GET shows a button, POST unlocks."""
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            service.unlock(token, current_actor())
        except service.AccountError as exc:
            page = render_template("accounts/unlock.html", form=None, error=str(exc))
            return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
        page = render_template("accounts/unlock.html", form=None, error=None, unlocked=True)
        return _no_referrer(make_response(page))
    try:
        service.check_unlock(token)
    except service.AccountError as exc:
        page = render_template("accounts/unlock.html", form=None, error=str(exc))
        return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
    return _no_referrer(
        make_response(render_template("accounts/unlock.html", form=form, error=None))
    )


def _finish_password_login(
    user: User, *, remember: bool, device: devices.Device | None, known: bool
) -> Response:
    """The password is proven: sign in, or first ask for the second factor.

    With 2FA on, the password alone signs nobody in: the session only gets a pending state
    (server-side, 5 minutes, bound to this session) and the user the /auth/login/2fa step,
    which also gives the device cookie.
    """
    target = safe_next(request.args.get("next"), url_for("web.home"))
    if mfa.has_totp(user.id):
        pending_login.begin(user.id, remember=remember, target=target)
        return redirect(url_for("accounts.login_second_factor"), code=HTTPStatus.SEE_OTHER)
    _sign_in(user, remember=remember)
    service.record_login(user, current_actor(), remember=remember)
    return _remember_device(redirect(target, code=HTTPStatus.SEE_OTHER), user, device, known=known)


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
    """Prove the password (and the second factor, when on) again before a sensitive action.

    ASVS 7.5.1 / 7.5.3: a recent sign-in means every factor the account has, not just one.
    A wrong code here counts on the lockout as at the login's 2FA step: a stolen session
    plus the password must not buy unbounded code guesses (NIST SP 800-63B-4 3.2.2).
    """
    form = ReauthForm()
    target = safe_next(request.args.get("next"), url_for("web.home"))
    user: User = current_user._get_current_object()
    needs_code = mfa.has_totp(user.id)
    if form.validate_on_submit():
        rate_limit.check(LimitName.USER_REAUTH, str(user.id))  # before hashing
        actor = current_actor()
        if needs_code and not form.code.data:
            form.code.errors.append("Enter the code from your authenticator app.")
        elif not service.reauthenticate(user, form.password.data, actor, lockout_context()):
            form.password.errors.append("That password is not correct.")
        elif needs_code and not _second_factor_ok(user, form.code.data):
            form.code.errors.append("That code is not correct.")
        else:
            sessions.mark_reauthenticated()
            return redirect(target, code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.UNAUTHORIZED if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/reauth.html", form=form, needs_code=needs_code), status


def _second_factor_ok(user: User, code: str) -> bool:
    throttle_second_factor(user.id)
    return counted_second_factor(user, code, devices.current_device()) is not None


def counted_second_factor(
    user: User, code: str, device: devices.Device | None
) -> mfa.Factor | None:
    """Check a code as a sign-in attempt: failures count on the account's lockout.

    For the login's 2FA step and re-authentication, where the password was just proven
    and only the code stands between its holder and the account (accounts/service.py
    `authenticate_second_factor`).
    """
    return service.authenticate_second_factor(user, code, current_actor(), lockout_context(device))


def lockout_context(device: devices.Device | None = None) -> service.LockoutContext:
    """What counting an attempt on the lockout needs: the browser's device cookie (this
    request's unless given), the mailer for a lock notice, the site and the policy."""
    return service.LockoutContext(
        device=device if device is not None else devices.current_device(),
        mailer=_deferred_mailer(),
        site=_site(),
        policy=LockoutPolicy.from_settings(_settings()),
    )


# ------------------------------------------------------------------------ account
@bp.route("/account/", methods=["GET", "POST"])
@login_required
def account() -> Response | tuple[str, int]:
    # Viewing the page needs a sign-in; changing the password needs a recent one (ASVS 7.5.1).
    if request.method == "POST" and not is_fresh():
        return redirect(url_for("accounts.reauth", next=request.path), code=HTTPStatus.SEE_OTHER)
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user: User = current_user._get_current_object()
        # The current password is checked again here: counted before hashing, like reauth
        # and the email change, so a session rider can't guess it at leisure.
        rate_limit.check(LimitName.USER_REAUTH, str(user.id))
        try:
            service.change_password(
                user,
                current=form.current_password.data,
                new=form.new_password.data,
                actor=current_actor(),
                site=_site(),
                context=lockout_context(),
            )
        except service.AccountError as exc:
            form.new_password.errors.append(str(exc))
        else:
            # A password change ends every other session and remember-me token (ASVS 7.4.3)
            # and gives this one a new id.
            sessions.revoke_user_sessions(user.id, keep_current=True)
            sessions.rotate_session_id()
            notify(
                _mailer(),
                to=user.email,
                notice=Notice.PASSWORD_CHANGED,
                public_url=_settings().public_url,
            )
            flash("Your password has been changed. Other sessions were signed out.", "success")
            return redirect(url_for("accounts.account"), code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    user = current_user._get_current_object()
    page = render_template("accounts/account.html", form=form, mfa_on=mfa.has_totp(user.id))
    return page, status


# -------------------------------------------------------------------- first admin
@bp.route("/setup/<token>", methods=["GET", "POST"])
@public
def setup(token: str) -> Response:
    try:
        service.check_setup_token(token)
    except service.AccountError as exc:
        page = render_template("accounts/setup.html", form=None, error=str(exc))
        return _no_referrer(make_response(page, HTTPStatus.NOT_FOUND))
    form = SetupForm()
    return _one_time_link_form(
        "accounts/setup.html",
        form,
        lambda: service.setup_admin(
            token,
            email=form.email.data,
            name=form.name.data,
            password=form.password.data,
            actor=current_actor(),
            site=_site(),
        ),
        done="The administrator account is ready. Sign in to continue.",
    )


# The rest of the account pages live in their own modules and register on `bp` here, once
# the helpers above exist: reset and email change, 2FA, and the session list.
from bastion.accounts import mfa_views, my_sessions, recovery  # noqa: E402, F401
