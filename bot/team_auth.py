"""The engagement team's credentials: a token from configuration that every changing tool call needs."""
from __future__ import annotations

import hmac
from typing import Optional


class NotAuthorised(PermissionError):
    """The caller did not show the engagement team's token, or the tools are switched off."""


_SEAL = object()


class TeamPass:
    """Proof that the caller presented the configured team token; only authorise() makes one."""

    __slots__ = ("_seal",)

    def __init__(self, seal: object) -> None:
        """Refuse to be built by anything but authorise()."""
        if seal is not _SEAL:
            raise NotAuthorised("a team pass comes only from bot.team_auth.authorise()")
        self._seal = seal

    def __repr__(self) -> str:
        """Never shows a token (there is none inside)."""
        return "<TeamPass>"


def authorise(configured: Optional[str], presented: Optional[str]) -> TeamPass:
    """A TeamPass when presented equals the configured TEAM_TOKEN (constant-time); else NotAuthorised."""
    configured = (configured or "").strip()
    presented = (presented or "").strip()
    if not configured:
        raise NotAuthorised(
            "The team tools are switched off: TEAM_TOKEN is not set in this installation's configuration."
        )
    if not presented:
        raise NotAuthorised("A team token is needed for this.")
    if not hmac.compare_digest(configured.encode("utf-8"), presented.encode("utf-8")):
        raise NotAuthorised("That team token is not right.")
    return TeamPass(_SEAL)


def require(auth: object) -> None:
    """Raise NotAuthorised unless auth is a TeamPass from authorise()."""
    if not isinstance(auth, TeamPass) or getattr(auth, "_seal", None) is not _SEAL:
        raise NotAuthorised("Only the engagement team can do this: present the team token first.")


def authorise_member(signed_in: object) -> TeamPass:
    """A TeamPass for a team member signed in to the console (bot.console.accounts.SignedIn); else NotAuthorised."""
    from bot.console.accounts import SignedIn

    if not isinstance(signed_in, SignedIn):
        raise NotAuthorised("Only a signed-in team member can do this.")
    return TeamPass(_SEAL)
