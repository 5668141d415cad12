"""Alembic environment: migrates the app database named by DATABASE_URL (via bot.settings)."""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from bot.db import load_models, make_engine
from bot.settings import load_settings

config = context.config

# The command line configures logging from alembic.ini; bot.db.migrate() leaves
# the running process's logging alone.
if config.config_file_name and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Every table: bot/models.py plus any bot/*_models.py (autogenerate compares against all of them).
target_metadata = load_models()


def _database_url() -> str:
    """The URL given by bot.db.migrate(), else DATABASE_URL from the environment."""
    return config.attributes.get("database_url") or load_settings().database_url


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=_database_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against a live connection."""
    url = _database_url()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things: Alembic's batch mode copies the table instead.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
