"""The audit trail: typed events written with the change they describe, in a hash chain."""

from bastion.audit.events import Actor, EventTag, Outcome
from bastion.audit.service import record, record_failure

__all__ = ["Actor", "EventTag", "Outcome", "record", "record_failure"]
