"""The admin console: security dashboard, users, sessions and the audit log."""
