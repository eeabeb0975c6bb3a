"""Password reset and email change pages (rules in accounts/lifecycle.py)."""

from __future__ import annotations

from http import HTTPStatus

from flask import flash, make_response, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from bastion.accounts import lifecycle, mfa
from bastion.accounts.forms import ButtonForm, EmailChangeForm, ResetPasswordForm, ResetRequestForm
from bastion.accounts.models import User
from bastion.accounts.notifications import Notice, notify, send_after_response
from bastion.accounts.service import AccountError, normalise_email
from bastion.accounts.throttle import throttle_second_factor
from bastion.accounts.views import _mailer, _no_referrer, _settings, _site, bp, lockout_context
from bastion.security import sessions
from bastion.security.client import client_ip
from bastion.security.freshness import recent_auth_required
from bastion.security.identity import current_actor
from bastion.security.policy import login_required, public
from bastion.security.rate_limit import LimitName, check

# OWASP Authentication CS: the one answer to every reset request.
RESET_SENT = (
    "If that email address is in our database, we will send you an email to reset your "
    "password. The link works for 30 minutes."
)


# ----------------------------------------------------------------- password reset
@bp.route("/auth/reset", methods=["GET", "POST"])
@public
def reset_request() -> Response | tuple[str, int]:
    form = ResetRequestForm()
    if form.validate_on_submit():
        check(LimitName.IP_RESET, client_ip())  # before any lookup: stops inbox probing
        try:
            email = normalise_email(form.email.data)
        except AccountError as exc:
            form.email.errors.append(str(exc))
        else:
            check(LimitName.USER_RESET, email)  # counted for unknown addresses too
            message = lifecycle.reset_request_mail(email, actor=current_actor(), site=_site())
            send_after_response(_mailer(), message)
            return render_template("accounts/reset_sent.html", message=RESET_SENT), HTTPStatus.OK
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/reset_request.html", form=form), status


@bp.route("/auth/reset/<token>", methods=["GET", "POST"])
@public
def reset_password(token: str) -> Response:
    try:
        user = lifecycle.check_reset_token(token)
    except AccountError as exc:
        page = render_template("accounts/reset_password.html", form=None, error=str(exc))
        return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
    needs_code = mfa.has_totp(user.id)
    form = ResetPasswordForm()
    if form.validate_on_submit():
        if needs_code and form.code.data:
            throttle_second_factor(user.id)
        try:
            result = lifecycle.reset_password(
                token,
                password=form.password.data,
                code=form.code.data if needs_code else None,
                actor=current_actor(),
                site=_site(),
            )
        except AccountError as exc:
            target = form.code if isinstance(exc, lifecycle.WrongCode) else form.password
            target.errors = [*target.errors, str(exc)]
        else:
            notify(
                _mailer(),
                to=result.user.email,
                notice=Notice.PASSWORD_RESET,
                public_url=_settings().public_url,
            )
            flash("Your password has been reset. Sign in with your new password.", "success")
            return _no_referrer(redirect(url_for("accounts.login"), code=HTTPStatus.SEE_OTHER))
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    page = render_template(
        "accounts/reset_password.html", form=form, error=None, needs_code=needs_code, user=user
    )
    return _no_referrer(make_response(page, status))


# ------------------------------------------------------------------- email change
@bp.route("/account/email", methods=["GET", "POST"])
@login_required
@recent_auth_required
def change_email() -> Response | tuple[str, int]:
    form = EmailChangeForm()
    user: User = current_user._get_current_object()
    if form.validate_on_submit():
        check(LimitName.USER_REAUTH, str(user.id))  # the password is checked again here
        try:
            message = lifecycle.request_email_change(
                user,
                password=form.password.data,
                new_email=form.new_email.data,
                actor=current_actor(),
                site=_site(),
                context=lockout_context(),
            )
        except AccountError as exc:
            field = form.password if isinstance(exc, lifecycle.WrongPassword) else form.new_email
            field.errors = [*field.errors, str(exc)]
        else:
            check(LimitName.USER_EMAIL, str(user.id))  # mails to other inboxes: bounded
            send_after_response(_mailer(), message)
            flash(
                "We have sent a confirmation link to the new address. Your address changes "
                "when you open it.",
                "success",
            )
            return redirect(url_for("accounts.account"), code=HTTPStatus.SEE_OTHER)
    status = HTTPStatus.BAD_REQUEST if form.is_submitted() else HTTPStatus.OK
    return render_template("accounts/change_email.html", form=form), status


@bp.route("/account/email/confirm/<token>", methods=["GET", "POST"])
@login_required
def confirm_email_change(token: str) -> Response:
    user: User = current_user._get_current_object()
    form = ButtonForm()
    try:
        new_email = lifecycle.check_email_change(token, user)
    except AccountError as exc:
        page = render_template("accounts/confirm_email_change.html", form=None, error=str(exc))
        return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
    if form.validate_on_submit():
        try:
            old, new = lifecycle.apply_email_change(token, user, current_actor())
        except AccountError as exc:
            page = render_template("accounts/confirm_email_change.html", form=None, error=str(exc))
            return _no_referrer(make_response(page, HTTPStatus.BAD_REQUEST))
        # The identity behind this session changed: give it a new id (ASVS 7.2.4).
        sessions.rotate_session_id()
        notify(
            _mailer(),
            to=old,
            notice=Notice.EMAIL_CHANGED,
            public_url=_settings().public_url,
            new_email=new,
        )
        flash(f"Your email address is now {new}.", "success")
        return _no_referrer(redirect(url_for("accounts.account"), code=HTTPStatus.SEE_OTHER))
    page = render_template(
        "accounts/confirm_email_change.html", form=form, error=None, new_email=new_email
    )
    return _no_referrer(make_response(page))
