"""Scopes: what a role allows, what a set of scopes grants, and who may hand out which.

A scope is "<family>:<action>" (download:read) or a family's wildcard (download:*). One scope is
held only by name: download:priority (queue at HIGH priority), which download:* does not grant, as
every person and most keys hold download:*. A key may carry it whatever its owner's role; a
person's login holds it only as an admin. A key's own scopes never reach past its owner's role:
they are capped at every call (identity) and refused when a key is made or widened (api_keys).
Nobody grants a scope they do not hold themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

from wallwhale.db.models import UserRole
from wallwhale.errors import InvalidArgument, PermissionDenied

PRIORITY_SCOPE = "download:priority"
# Scopes no wildcard grants: they must be held by name.
_BY_NAME_ONLY = frozenset({PRIORITY_SCOPE})


def role_scopes(role: UserRole) -> frozenset[str]:
    """What a logged-in person may do: admins everything, users their own downloads, watches and webhooks."""
    if role is UserRole.ADMIN:
        return frozenset({"admin:*", "download:*", "watch:*", "webhook:*", PRIORITY_SCOPE})
    return frozenset({"download:*", "watch:*", "webhook:*"})


def key_scopes(role: UserRole) -> frozenset[str]:
    """What a key of an owner with this role may carry: the role's scopes, and HIGH priority, which
    an admin may hand to anyone's key."""
    return role_scopes(role) | {PRIORITY_SCOPE}


def grants(granted: Iterable[str], required: str) -> bool:
    """True when `granted` holds `required` itself or the wildcard of its family ("download:*");
    scopes held by name only need the name."""
    if not required:
        return True
    if required in _BY_NAME_ONLY:
        return required in set(granted)
    family = required.split(":", 1)[0]
    return any(scope in (required, f"{family}:*") for scope in granted)


def capped_by_role(scopes: Iterable[str], role: UserRole) -> frozenset[str]:
    """The part of a key's `scopes` its owner's role allows (a demoted admin's admin:* key loses
    admin:*)."""
    allowed = key_scopes(role)
    return frozenset(scope for scope in scopes if grants(allowed, scope))


def check_grantable(scopes: Iterable[str], owner_role: UserRole, granter_scopes: Iterable[str]) -> None:
    """Refuses scopes beyond the owner's role, then scopes the granter does not hold itself.

    A wildcard is held only as that wildcard: admin:write does not grant admin:*.
    """
    held = frozenset(granter_scopes)
    wanted = sorted(set(scopes))
    beyond_role = [scope for scope in wanted if not grants(key_scopes(owner_role), scope)]
    if beyond_role:
        raise InvalidArgument.field(
            "api_key.scopes",
            f"{', '.join(beyond_role)} exceed(s) the owner's role {owner_role.value}",
        )
    not_held = [scope for scope in wanted if not grants(held, scope)]
    if not_held:
        # SCOPE_MISSING: the caller lacks the scope it tried to hand out (the message says which).
        raise PermissionDenied(f"you cannot grant scopes you do not hold: {', '.join(not_held)}")
