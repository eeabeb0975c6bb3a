"""Throttle second-factor guessing with the named limits `ip.mfa` and `user.mfa`.

A 6-digit code has a million values and three are valid at any moment (valid_window 1),
so unthrottled guessing would win within hours (RFC 4226 section 7.3; pyotp README). Every
attempt counts, right or wrong, before the code is looked at.
"""

from __future__ import annotations

from bastion.security.client import client_ip
from bastion.security.rate_limit import LimitName, check


def throttle_second_factor(user_id: int) -> None:
    """Count one code attempt for this IP and account; raise RateLimited when spent."""
    check(LimitName.IP_MFA, client_ip())
    check(LimitName.USER_MFA, str(user_id))
