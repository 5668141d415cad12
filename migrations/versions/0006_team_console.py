"""the engagement team's console: team members, sessions, failed sign-ins and the audit log

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create team_members, team_sessions, team_sign_in_failures and team_audit_log."""
    op.create_table(
        "team_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sign_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_members")),
        sa.UniqueConstraint("username", name=op.f("uq_team_members_username")),
    )
    op.create_table(
        "team_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["team_members.id"], name=op.f("fk_team_sessions_member_id_team_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_team_sessions_token_hash")),
    )
    op.create_index(op.f("ix_team_sessions_member_id"), "team_sessions", ["member_id"])
    op.create_table(
        "team_sign_in_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_sign_in_failures")),
    )
    op.create_index("ix_team_sign_in_failures_username_at", "team_sign_in_failures", ["username", "at"])
    op.create_table(
        "team_audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_audit_log")),
    )
    op.create_index(op.f("ix_team_audit_log_at"), "team_audit_log", ["at"])


def downgrade() -> None:
    """Drop the console's tables."""
    op.drop_index(op.f("ix_team_audit_log_at"), table_name="team_audit_log")
    op.drop_table("team_audit_log")
    op.drop_index("ix_team_sign_in_failures_username_at", table_name="team_sign_in_failures")
    op.drop_table("team_sign_in_failures")
    op.drop_index(op.f("ix_team_sessions_member_id"), table_name="team_sessions")
    op.drop_table("team_sessions")
    op.drop_table("team_members")
