"""delivery layer, groups and broadcasts; champions' opt-out, reachability and organisation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the champions' new columns and the groups, broadcasts and outbound message tables."""
    with op.batch_alter_table("champions") as batch:
        batch.add_column(sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("unreachable_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("unreachable_reason", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("organisation", sa.String(length=64), nullable=True))

    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('organisation', 'cohort', 'project')", name=op.f("ck_groups_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("kind", "name", name="uq_groups_kind_name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"],
            name=op.f("fk_group_members_group_id_groups"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["champion_id"], ["champions.id"],
            name=op.f("fk_group_members_champion_id_champions"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "champion_id", name=op.f("pk_group_members")),
    )
    op.create_index("ix_group_members_champion_id", "group_members", ["champion_id"])

    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("buttons", sa.JSON(), nullable=True),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_group_id", sa.Integer(), nullable=True),
        sa.Column("target_champion_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("queued_count", sa.Integer(), nullable=True),
        sa.Column("opted_out_count", sa.Integer(), nullable=True),
        sa.Column("unreachable_count", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "target_kind IN ('all', 'group', 'champion')", name=op.f("ck_broadcasts_target_kind")
        ),
        sa.CheckConstraint(
            "status IN ('scheduled', 'sending', 'sent', 'cancelled')", name=op.f("ck_broadcasts_status")
        ),
        sa.ForeignKeyConstraint(
            ["target_group_id"], ["groups.id"],
            name=op.f("fk_broadcasts_target_group_id_groups"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["target_champion_id"], ["champions.id"],
            name=op.f("fk_broadcasts_target_champion_id_champions"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_index("ix_broadcasts_status_send_at", "broadcasts", ["status", "send_at"])

    op.create_table(
        "outbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source_key", sa.String(length=200), nullable=False),
        sa.Column("broadcast_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("buttons", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("channel_message_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'failed', 'skipped')",
            name=op.f("ck_outbound_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["champion_id"], ["champions.id"],
            name=op.f("fk_outbound_messages_champion_id_champions"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["broadcast_id"], ["broadcasts.id"],
            name=op.f("fk_outbound_messages_broadcast_id_broadcasts"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_messages")),
        sa.UniqueConstraint("source_key", name=op.f("uq_outbound_messages_source_key")),
    )
    op.create_index(
        "ix_outbound_messages_status_not_before", "outbound_messages", ["status", "not_before"]
    )
    op.create_index("ix_outbound_messages_broadcast_id", "outbound_messages", ["broadcast_id"])
    op.create_index("ix_outbound_messages_champion_id", "outbound_messages", ["champion_id"])

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbound_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbound_id"], ["outbound_messages.id"],
            name=op.f("fk_delivery_attempts_outbound_id_outbound_messages"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index("ix_delivery_attempts_outbound_id", "delivery_attempts", ["outbound_id"])

    op.create_table(
        "telegram_callbacks",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_telegram_callbacks")),
    )


def downgrade() -> None:
    """Drop what upgrade() added."""
    op.drop_table("telegram_callbacks")
    op.drop_table("delivery_attempts")
    op.drop_table("outbound_messages")
    op.drop_table("broadcasts")
    op.drop_table("group_members")
    op.drop_table("groups")
    with op.batch_alter_table("champions") as batch:
        batch.drop_column("organisation")
        batch.drop_column("unreachable_reason")
        batch.drop_column("unreachable_at")
        batch.drop_column("opted_out_at")
