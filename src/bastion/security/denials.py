"""Record refused requests as audit events (ASVS 16.3.2)."""

from __future__ import annotations

from bastion.audit import EventTag, Outcome, record_failure
from bastion.security import alerts
from bastion.security.identity import current_actor


def record_denial(endpoint: str, missing: list[str]) -> None:
    record_failure(
        EventTag.AUTHZ_DENIED,
        current_actor(),
        outcome=Outcome.DENIED,
        target=endpoint,
        details={"missing": missing},
    )
    alerts.after_denial(current_actor())  # repeated denials raise an alert
