"""Team members, sign-in with a limit on failures, sessions that expire, and the audit log.

Passwords are hashed with Argon2 by argon2-cffi (the reference implementation's
Python binding, kept up to date with the password-hashing competition winner);
nothing here compares or stores a plain password.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import List, Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.console_models import DETAIL_MAX, USERNAME_MAX, AuditEntry, SignInFailure, TeamMember, TeamSession
from bot.groups import TeamInputError
from bot.models import as_utc, utcnow
from bot.text import clean_text

USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")
PASSWORD_MIN = 12
PASSWORD_MAX = 1024


class SignInRefused(Exception):
    """A sign-in that did not work: reason is "wrong" (name or password) or "locked" (too many failures)."""

    def __init__(self, reason: str) -> None:
        """Keep why it was refused."""
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedIn:
    """A live session: who is signed in and the CSRF token their forms must carry."""

    member_id: int
    username: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class AuditView:
    """One audit log line as the console shows it."""

    at: datetime
    actor: str
    action: str
    detail: str


def clean_username(name: str) -> str:
    """A username as stored (lower case), or TeamInputError saying what is allowed."""
    cleaned = clean_text(str(name or ""), multiline=False).lower()
    if not USERNAME.fullmatch(cleaned):
        raise TeamInputError(
            "A username is 2 to 64 characters: lower-case letters, digits, and . _ @ - "
            "(it must start with a letter or digit)."
        )
    return cleaned


def check_password(password: str) -> str:
    """password unchanged if it is long enough to use, else TeamInputError."""
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        raise TeamInputError(f"A password needs at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        raise TeamInputError(f"A password can be at most {PASSWORD_MAX} characters.")
    return password


def _token_hash(token: str) -> str:
    """The SHA-256 of a session token, as stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TeamAccounts:
    """Team members, their sessions, the sign-in limit and the audit log, one short transaction per call."""

    def __init__(
        self,
        session_factory: "sessionmaker[Session]",
        *,
        max_failures: int = 5,
        lockout: timedelta = timedelta(minutes=15),
        idle: timedelta = timedelta(minutes=30),
        longest: timedelta = timedelta(hours=8),
        hasher: Optional[PasswordHasher] = None,
    ) -> None:
        """max_failures within lockout lock a username for lockout; sessions end after idle or longest."""
        self._sessions = session_factory
        self.max_failures = max_failures
        self.lockout = lockout
        self.idle = idle
        self.longest = longest
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    # --- members -------------------------------------------------------------------------------

    def create_member(self, username: str, password: str) -> int:
        """Add a team member; TeamInputError if the name is taken or unusable or the password too short."""
        name = clean_username(username)
        hashed = self._hasher.hash(check_password(password))
        with self._sessions() as session:
            member = TeamMember(username=name, password_hash=hashed, created_at=utcnow())
            session.add(member)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise TeamInputError(f"There is already a team member called {name!r}.") from None
            return member.id

    def set_password(self, username: str, password: str) -> None:
        """Give a member a new password and end their sessions; TeamInputError if there is no such member."""
        name = clean_username(username)
        hashed = self._hasher.hash(check_password(password))
        with self._sessions() as session:
            member = session.execute(select(TeamMember).where(TeamMember.username == name)).scalar_one_or_none()
            if member is None:
                raise TeamInputError(f"There is no team member called {name!r}.")
            member.password_hash = hashed
            session.execute(delete(TeamSession).where(TeamSession.member_id == member.id))
            session.commit()

    def member_count(self) -> int:
        """How many team members there are."""
        with self._sessions() as session:
            return int(session.execute(select(func.count()).select_from(TeamMember)).scalar_one())

    # --- signing in and out ----------------------------------------------------------------------

    def _recent_failures(self, session: Session, name: str, now: datetime) -> int:
        """Failed sign-ins for name within the lockout window."""
        return int(session.execute(
            select(func.count()).select_from(SignInFailure)
            .where(SignInFailure.username == name, SignInFailure.at > now - self.lockout)
        ).scalar_one())

    def sign_in(self, username: str, password: str, now: Optional[datetime] = None) -> str:
        """A new session token for the right name and password; SignInRefused("wrong"/"locked") otherwise."""
        now = now or utcnow()
        name = clean_text(str(username or ""), multiline=False).lower()[:USERNAME_MAX]
        password = password if isinstance(password, str) else ""
        with self._sessions() as session:
            if self._recent_failures(session, name, now) >= self.max_failures:
                raise SignInRefused("locked")
            member = session.execute(select(TeamMember).where(TeamMember.username == name)).scalar_one_or_none()
            if not self._verify(member.password_hash if member else None, password[:PASSWORD_MAX]):
                session.add(SignInFailure(username=name, at=now))
                session.commit()
                raise SignInRefused("wrong")
            if self._hasher.check_needs_rehash(member.password_hash):
                member.password_hash = self._hasher.hash(password)
            member.last_sign_in_at = now
            session.execute(delete(SignInFailure).where(SignInFailure.username == name))
            session.execute(delete(TeamSession).where(TeamSession.expires_at <= now))
            token = secrets.token_urlsafe(32)
            session.add(TeamSession(
                token_hash=_token_hash(token), member_id=member.id, csrf_token=secrets.token_urlsafe(32),
                created_at=now, last_seen_at=now, expires_at=min(now + self.idle, now + self.longest),
            ))
            session.commit()
        return token

    def _verify(self, stored: Optional[str], password: str) -> bool:
        """True when password matches stored; an unknown name costs the same work as a known one."""
        try:
            return self._hasher.verify(stored or self._dummy_hash, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def session(self, token: Optional[str], now: Optional[datetime] = None) -> Optional[SignedIn]:
        """Who holds token, extending an idle session (never past its longest life); None if expired or unknown."""
        if not token or len(token) > 200:
            return None
        now = now or utcnow()
        with self._sessions() as session:
            row = session.execute(
                select(TeamSession, TeamMember)
                .join(TeamMember, TeamMember.id == TeamSession.member_id)
                .where(TeamSession.token_hash == _token_hash(token))
            ).first()
            if row is None:
                return None
            live, member = row
            if as_utc(live.expires_at) <= now:
                session.delete(live)
                session.commit()
                return None
            live.last_seen_at = now
            live.expires_at = min(now + self.idle, as_utc(live.created_at) + self.longest)
            session.commit()
            return SignedIn(member.id, member.username, live.csrf_token, as_utc(live.expires_at))

    def sign_out(self, token: Optional[str]) -> None:
        """End the session that token opened (nothing happens for an unknown token)."""
        if not token:
            return
        with self._sessions() as session:
            session.execute(delete(TeamSession).where(TeamSession.token_hash == _token_hash(token)))
            session.commit()

    # --- the audit log ---------------------------------------------------------------------------

    def record(self, actor: str, action: str, detail: str = "") -> None:
        """Add a line to the audit log: who (username), what (a short action name) and which (ids, filters)."""
        with self._sessions() as session:
            session.add(AuditEntry(
                at=utcnow(), actor=actor[:USERNAME_MAX], action=action[:64],
                detail=clean_text(detail, multiline=False)[:DETAIL_MAX] or None,
            ))
            session.commit()

    def audit_log(self, limit: int = 200) -> List[AuditView]:
        """The latest audit lines, newest first."""
        with self._sessions() as session:
            rows = session.execute(
                select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(0, limit))
            ).scalars().all()
        return [AuditView(as_utc(r.at), r.actor, r.action, r.detail or "") for r in rows]


def same_token(expected: str, presented: Optional[str]) -> bool:
    """True when a presented CSRF token equals the expected one (constant time)."""
    return bool(presented) and hmac.compare_digest(expected.encode("utf-8"), str(presented).encode("utf-8"))
