"""champions' time zones and erasure requests; reflections, pledges and check-ins

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the champion columns and create the reflections, pledges and pledge_check_ins tables."""
    with op.batch_alter_table("champions") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("erasure_requested_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "reflections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=True),
        sa.Column("session_label", sa.String(length=200), nullable=True),
        sa.Column("organisation", sa.String(length=64), nullable=True),
        sa.Column("takeaway", sa.Text(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("improvement", sa.Text(), nullable=True),
        sa.Column("sharing", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "rating IS NULL OR (rating >= 1 AND rating <= 5)", name=op.f("ck_reflections_rating")
        ),
        sa.CheckConstraint(
            "sharing IS NULL OR sharing IN ('private', 'anonymous', 'named')", name=op.f("ck_reflections_sharing")
        ),
        sa.ForeignKeyConstraint(
            ["champion_id"], ["champions.id"],
            name=op.f("fk_reflections_champion_id_champions"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["meeting_id"], ["meetings.id"],
            name=op.f("fk_reflections_meeting_id_meetings"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reflections")),
    )
    op.create_index("ix_reflections_champion_id_created_at", "reflections", ["champion_id", "created_at"])
    op.create_index("ix_reflections_created_at", "reflections", ["created_at"])

    op.create_table(
        "pledges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reflection_id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'done', 'in_progress', 'need_help', 'let_go')", name=op.f("ck_pledges_status")
        ),
        sa.ForeignKeyConstraint(
            ["reflection_id"], ["reflections.id"],
            name=op.f("fk_pledges_reflection_id_reflections"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["champion_id"], ["champions.id"],
            name=op.f("fk_pledges_champion_id_champions"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pledges")),
    )
    op.create_index("ix_pledges_champion_id", "pledges", ["champion_id"])
    op.create_index("ix_pledges_reflection_id", "pledges", ["reflection_id"])

    op.create_table(
        "pledge_check_ins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pledge_id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outbound_id", sa.Integer(), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answer", sa.String(length=16), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'queued', 'answered', 'cancelled')", name=op.f("ck_pledge_check_ins_status")
        ),
        sa.CheckConstraint(
            "answer IS NULL OR answer IN ('done', 'in_progress', 'need_help', 'let_go')",
            name=op.f("ck_pledge_check_ins_answer"),
        ),
        sa.ForeignKeyConstraint(
            ["pledge_id"], ["pledges.id"],
            name=op.f("fk_pledge_check_ins_pledge_id_pledges"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["champion_id"], ["champions.id"],
            name=op.f("fk_pledge_check_ins_champion_id_champions"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["outbound_id"], ["outbound_messages.id"],
            name=op.f("fk_pledge_check_ins_outbound_id_outbound_messages"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pledge_check_ins")),
    )
    op.create_index("ix_pledge_check_ins_status_due_at", "pledge_check_ins", ["status", "due_at"])
    op.create_index("ix_pledge_check_ins_pledge_id", "pledge_check_ins", ["pledge_id"])
    op.create_index("ix_pledge_check_ins_champion_id", "pledge_check_ins", ["champion_id"])


def downgrade() -> None:
    """Drop what upgrade() added."""
    op.drop_table("pledge_check_ins")
    op.drop_table("pledges")
    op.drop_table("reflections")
    with op.batch_alter_table("champions") as batch:
        batch.drop_column("erasure_requested_at")
        batch.drop_column("time_zone")
