"""Tables for the five steps walk-through: a champion's projects and their answers, step by step."""
from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import relationship

from bot.models import Base, utcnow

PROJECT_NAME_MAX = 80
PROJECT_ABOUT_MAX = 300
QUESTION_KEY_MAX = 64


class Project(Base):
    """One project a champion is working through the five steps for; it remembers where they are."""

    __tablename__ = "projects"
    __table_args__ = (Index("ix_projects_champion_id_updated_at", "champion_id", "updated_at"),)

    id = Column(Integer, primary_key=True)
    champion_id = Column(
        Integer, ForeignKey("champions.id", ondelete="CASCADE"), nullable=False
    )
    name = Column(String(PROJECT_NAME_MAX), nullable=False)
    # One line on what the project is about ("" until the champion has said).
    about = Column(String(PROJECT_ABOUT_MAX), nullable=False, default="")
    # Key of the question to ask next (knowledge/five_steps.yml); None once every question is dealt with.
    current_question = Column(String(QUESTION_KEY_MAX), nullable=True)
    completed_at = Column(DateTime(timezone=True), nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)

    answers = relationship(
        "StepAnswer",
        back_populates="project",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        """Short form for logs; never includes what the champion wrote."""
        return f"<Project id={self.id} champion_id={self.champion_id} at={self.current_question!r}>"


class StepAnswer(Base):
    """The champion's answer to one question of one project (or a note that they skipped it)."""

    __tablename__ = "step_answers"
    __table_args__ = (
        UniqueConstraint("project_id", "question_key", name="uq_step_answers_project_id_question_key"),
    )

    id = Column(Integer, primary_key=True)
    project_id = Column(
        Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
    )
    question_key = Column(String(QUESTION_KEY_MAX), nullable=False)
    # Free text as typed, or option values joined by "," for choice questions; None when skipped.
    value = Column(Text, nullable=True)
    skipped = Column(Boolean, nullable=False, default=False)
    updated_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)

    project = relationship("Project", back_populates="answers")

    def __repr__(self) -> str:
        """Short form for logs; never includes what the champion wrote."""
        return f"<StepAnswer project_id={self.project_id} key={self.question_key!r} skipped={self.skipped}>"
