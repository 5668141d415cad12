"""Tables for the engagement team's console: team members, their signed-in sessions, failed sign-ins, and the audit log.

Passwords are kept only as Argon2 hashes (argon2-cffi). A session row holds a
SHA-256 of the cookie's random token, never the token itself, and the session's
own CSRF token for the console's forms. Failed sign-ins are rows so that the
limit holds across restarts and across several console processes. The audit
log records who sent a message or took data out, and when; it never holds a
message's text.
"""
from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, String, Text

from bot.models import Base, utcnow

USERNAME_MAX = 64
DETAIL_MAX = 500


class TeamMember(Base):
    """One member of the engagement team who may sign in to the console."""

    __tablename__ = "team_members"

    id = Column(Integer, primary_key=True)
    username = Column(String(USERNAME_MAX), nullable=False, unique=True)
    password_hash = Column(String(255), nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_sign_in_at = Column(DateTime(timezone=True), nullable=True)


class TeamSession(Base):
    """A signed-in browser: the hash of its cookie token, its CSRF token, and when it expires."""

    __tablename__ = "team_sessions"

    id = Column(Integer, primary_key=True)
    token_hash = Column(String(64), nullable=False, unique=True)
    member_id = Column(Integer, ForeignKey("team_members.id", ondelete="CASCADE"), nullable=False, index=True)
    csrf_token = Column(String(64), nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_seen_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    expires_at = Column(DateTime(timezone=True), nullable=False)


class SignInFailure(Base):
    """One failed sign-in for a username (known or not), counted by the sign-in limit."""

    __tablename__ = "team_sign_in_failures"
    __table_args__ = (Index("ix_team_sign_in_failures_username_at", "username", "at"),)

    id = Column(Integer, primary_key=True)
    username = Column(String(USERNAME_MAX), nullable=False)
    at = Column(DateTime(timezone=True), nullable=False, default=utcnow)


class AuditEntry(Base):
    """Who did what in the console, and when: sending, scheduling, cancelling, exporting, group changes."""

    __tablename__ = "team_audit_log"

    id = Column(Integer, primary_key=True)
    at = Column(DateTime(timezone=True), nullable=False, default=utcnow, index=True)
    actor = Column(String(USERNAME_MAX), nullable=False)
    action = Column(String(64), nullable=False)
    detail = Column(Text, nullable=True)
