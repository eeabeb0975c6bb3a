"""Permissions (``scope:resource:action``) and the one table that grants them to roles.

Code checks permissions, never role names, so a new role is a line in ROLE_PERMISSIONS.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    ACCOUNT_SELF = "account:self:manage"
    ADMIN_CONSOLE = "admin:console:view"
    ADMIN_USERS = "admin:users:manage"
    ADMIN_SESSIONS = "admin:sessions:manage"
    AUDIT_READ = "admin:audit:read"
    DOCUMENTS_READ_ALL = "documents:all:read"


class Role(StrEnum):
    USER = "user"
    AUDITOR = "auditor"
    ADMIN = "admin"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.USER: frozenset({Permission.ACCOUNT_SELF}),
    Role.AUDITOR: frozenset(
        {Permission.ACCOUNT_SELF, Permission.ADMIN_CONSOLE, Permission.AUDIT_READ}
    ),
    # Reading everyone's documents is granted to no role by default, not even admin (issue 5).
    Role.ADMIN: frozenset(Permission) - {Permission.DOCUMENTS_READ_ALL},
}

# Roles whose holders may never use "remember me" (a stolen device must not stay admin).
PRIVILEGED_PERMISSIONS = frozenset(
    {Permission.ADMIN_CONSOLE, Permission.ADMIN_USERS, Permission.ADMIN_SESSIONS}
)


def permissions_for(role: str) -> frozenset[Permission]:
    try:
        return ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return frozenset()


def is_privileged(role: str) -> bool:
    return bool(permissions_for(role) & PRIVILEGED_PERMISSIONS)
