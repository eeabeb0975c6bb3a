"""Two-factor pages: the login step, enrolment, recovery codes, switching it off.

Also the BASTION_REQUIRE_2FA gate: an account that must have 2FA and lacks it reaches
only enrolment (and re-authentication, sign-out, health checks and static files).
"""

from __future__ import annotations

from http import HTTPStatus

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from bastion.accounts import mfa, pending_login, service
from bastion.accounts.forms import ButtonForm, DisableMfaForm, SecondFactorForm, TotpEnrolForm
from bastion.accounts.models import User
from bastion.accounts.notifications import Notice, notify
from bastion.accounts.throttle import throttle_second_factor
from bastion.accounts.views import (
    _mailer,
    _remember_device,
    _settings,
    _sign_in,
    bp,
    counted_second_factor,
    lockout_context,
)
from bastion.audit import EventTag, record_failure
from bastion.core.db import db
from bastion.security import devices, sessions
from bastion.security.crypto import DataKeyMissing
from bastion.security.freshness import recent_auth_required
from bastion.security.identity import current_actor
from bastion.security.permissions import Permission, permissions_for
from bastion.security.policy import login_required, public
from bastion.security.qr import qr_svg
from bastion.settings import Require2FA

PENDING_ENROLMENT = "_totp_enrolment"  # the sealed seed shown on the setup page
WRONG_CODE = "That code is not correct."

# What an account that must enrol may still reach (besides static files).
ENROLMENT_ENDPOINTS = frozenset(
    {
        "accounts.mfa_settings",
        "accounts.mfa_setup",
        "accounts.reauth",
        "accounts.logout",
        "web.healthz",
        "web.readyz",
    }
)


def _user() -> User:
    found: User = current_user._get_current_object()
    return found


def must_have_2fa(role: str, rule: Require2FA) -> bool:
    """Whether BASTION_REQUIRE_2FA obliges an account with this role to use 2FA.

    `admins` means every role that reaches the admin console (auditors included): whoever
    can see other people's data must not be one password away from an attacker.
    """
    if rule is Require2FA.ALL:
        return True
    if rule is Require2FA.ADMINS:
        return Permission.ADMIN_CONSOLE in permissions_for(role)
    return False


@bp.before_app_request
def require_enrolment() -> Response | None:
    """Send an account that must have 2FA, and lacks it, to enrolment before anything else.

    Registered with the accounts blueprint, so it runs after the CSRF check and the route
    policy (create_app's order): it only narrows what a signed-in user may reach.
    """
    rule = _settings().require_2fa
    endpoint = request.endpoint
    if rule is Require2FA.OFF or endpoint is None or endpoint in ENROLMENT_ENDPOINTS:
        return None
    if endpoint == "static" or endpoint.endswith(".static"):
        return None
    if not current_user.is_authenticated or not must_have_2fa(current_user.role, rule):
        return None
    if mfa.has_totp(int(current_user.id)):
        return None
    if request.path.startswith("/api/"):
        abort(HTTPStatus.FORBIDDEN)
    flash("Your account must use two-factor authentication. Set it up to continue.", "error")
    return redirect(url_for("accounts.mfa_setup"), code=HTTPStatus.SEE_OTHER)


# ---------------------------------------------------------------- the login step
@bp.route("/auth/login/2fa", methods=["GET", "POST"])
@public
def login_second_factor() -> Response | tuple[str, int]:
    """The second step of a sign-in; only a session that just proved the password gets here.

    Each wrong code is a failed sign-in on the account's lockout, and a locked account
    refuses even the right code (accounts/service.py `authenticate_second_factor`), so
    the pending state is no way round the lock. Only here, with every factor proven, does
    the browser get its device cookie.
    """
    pending = pending_login.current()
    user = db.session.get(User, pending.user_id) if pending is not None else None
    if pending is None or user is None or not user.is_active or not mfa.has_totp(user.id):
        pending_login.clear()
        flash("Sign in to continue.", "error")
        return redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
    form = SecondFactorForm()
    if form.validate_on_submit():
        throttle_second_factor(user.id)
        actor = current_actor()
        device = devices.current_device()
        factor = None
        if pending.nonce_matches(form.nonce.data):
            factor = counted_second_factor(user, form.code.data, device)
        if factor is not None and not pending_login.claim(pending):
            # A concurrent request completed this password step first. Nothing is written
            # to this session (a double click's browser keeps the winner's new cookie), and
            # the target signs in only the browser that won.
            return redirect(pending.target, code=HTTPStatus.SEE_OTHER)
        if factor is not None:
            # ASVS 7.2.4: the signed-in session gets a new id; the pending state is dropped.
            _sign_in(user, remember=pending.remember)
            service.record_login(user, actor, remember=pending.remember)
            if factor is mfa.Factor.RECOVERY_CODE:
                left = mfa.remaining_recovery_codes(user)
                flash(f"You used a recovery code; {left} left. Make new ones soon.", "error")
            response = redirect(pending.target, code=HTTPStatus.SEE_OTHER)
            known = device is not None and device.trusted_for(user.id)
            return _remember_device(response, user, device, known=known)
        if pending_login.record_wrong_code(pending) is None:
            flash("Too many wrong codes. Sign in again.", "error")
            return redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER)
        form.code.errors = [*form.code.errors, WRONG_CODE]
    form.nonce.data = pending.nonce
    status = HTTPStatus.UNAUTHORIZED if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/login_2fa.html", form=form), status


# ------------------------------------------------------------------ settings page
@bp.route("/account/2fa")
@login_required
def mfa_settings() -> str:
    user = _user()
    enabled = mfa.has_totp(user.id)
    return render_template(
        "accounts/mfa.html",
        enabled=enabled,
        remaining=mfa.remaining_recovery_codes(user) if enabled else 0,
        required=must_have_2fa(user.role, _settings().require_2fa),
        button=ButtonForm(),
    )


@bp.route("/account/2fa/setup", methods=["GET", "POST"])
@login_required
@recent_auth_required
def mfa_setup() -> Response | tuple[str, int]:
    user = _user()
    if mfa.has_totp(user.id):
        return redirect(url_for("accounts.mfa_settings"), code=HTTPStatus.SEE_OTHER)
    try:
        enrolment = _pending_enrolment(user)
    except DataKeyMissing:
        current_app.logger.error("2FA enrolment needs BASTION_DATA_KEY")
        abort(HTTPStatus.SERVICE_UNAVAILABLE)
    form = TotpEnrolForm()
    if form.validate_on_submit():
        throttle_second_factor(user.id)
        try:
            codes = mfa.enable(user, enrolment, form.code.data, current_actor())
        except mfa.MfaError as exc:
            form.code.errors = [*form.code.errors, str(exc)]
        else:
            session.pop(PENDING_ENROLMENT, None)
            # Sessions that began with the password alone (a thief's, perhaps) end now, and
            # this one gets a new id for its stronger state (ASVS 7.2.4, 7.4.3).
            sessions.revoke_user_sessions(user.id, keep_current=True)
            sessions.rotate_session_id()
            _notify(user, Notice.MFA_ENABLED)
            return render_template("accounts/recovery_codes.html", codes=codes, first=True), 200
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    qr = qr_svg(enrolment.uri, title="QR code for your authenticator app")
    page = render_template("accounts/mfa_setup.html", form=form, enrolment=enrolment, qr=qr)
    return page, status


def _pending_enrolment(user: User) -> mfa.Enrolment:
    """The seed this session is setting up (kept sealed in the session until confirmed)."""
    sealed = session.get(PENDING_ENROLMENT)
    if isinstance(sealed, str):
        found = mfa.open_pending(user, sealed)
        if found is not None:
            return found
    enrolment = mfa.new_enrolment(user)
    session[PENDING_ENROLMENT] = mfa.seal_pending(user, enrolment)
    return enrolment


@bp.route("/account/2fa/recovery-codes", methods=["GET", "POST"])
@login_required
@recent_auth_required
def mfa_recovery_codes() -> Response | tuple[str, int]:
    user = _user()
    if not mfa.has_totp(user.id):
        return redirect(url_for("accounts.mfa_settings"), code=HTTPStatus.SEE_OTHER)
    form = ButtonForm()
    if form.validate_on_submit():
        codes = mfa.regenerate_recovery_codes(user, current_actor())
        _notify(user, Notice.RECOVERY_CODES)
        return render_template("accounts/recovery_codes.html", codes=codes, first=False), 200
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/recovery_codes_confirm.html", form=form), status


@bp.route("/account/2fa/disable", methods=["GET", "POST"])
@login_required
@recent_auth_required
def mfa_disable() -> Response | tuple[str, int]:
    user = _user()
    if not mfa.has_totp(user.id):
        return redirect(url_for("accounts.mfa_settings"), code=HTTPStatus.SEE_OTHER)
    if must_have_2fa(user.role, _settings().require_2fa):
        flash("Your account must use two-factor authentication; it cannot be turned off.", "error")
        return redirect(url_for("accounts.mfa_settings"), code=HTTPStatus.SEE_OTHER)
    form = DisableMfaForm()
    if form.validate_on_submit():
        # The code is not counted on the lockout: this page needs a fresh sign-in, i.e. the
        # code was proven in this session within minutes, so a guess here wins nothing
        # new. The password is (service.verify_current_password).
        throttle_second_factor(user.id)
        actor = current_actor()
        if not service.verify_current_password(user, form.password.data, actor, lockout_context()):
            # ASVS 16.3.1: a failed authentication, with the factor that failed (a wrong
            # code is audited by mfa.verify_second_factor).
            record_failure(
                EventTag.MFA_DISABLE, actor, target=user.email, details={"factor": "password"}
            )
            form.password.errors = [*form.password.errors, "Your current password is not correct."]
        elif mfa.verify_second_factor(user, form.code.data, actor) is None:
            form.code.errors = [*form.code.errors, WRONG_CODE]
        else:
            mfa.disable(user, actor)
            _notify(user, Notice.MFA_DISABLED)
            # ASVS 7.4.3: after a factor change, offer to end the other sessions (this one
            # is fresh, so the confirmation page opens at once).
            flash(
                "Two-factor authentication is off. If your phone was lost or someone else may "
                "have your codes, sign out your other sessions now.",
                "success",
            )
            return redirect(url_for("accounts.revoke_other_sessions"), code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/mfa_disable.html", form=form), status


def _notify(user: User, notice: Notice) -> None:
    notify(_mailer(), to=user.email, notice=notice, public_url=_settings().public_url)
