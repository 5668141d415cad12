# The two commands from README.md: `make run` and `make test`.
.PHONY: run run-production test setup train migrate lock bench

run: setup train migrate
	.venv/bin/honcho start -f Procfile

# Production (README, "Production"): PostgreSQL, Redis and two Rasa servers.
PRODUCTION_ENV ?= deploy/production.env
run-production: setup train
	set -a && . $(abspath $(PRODUCTION_ENV)) && set +a && .venv/bin/alembic upgrade head
	.venv/bin/honcho start -f Procfile.production -e $(PRODUCTION_ENV)

test:
	scripts/test.sh

setup:
	scripts/bootstrap.sh

train: setup
	scripts/train.sh

migrate: setup
	.venv/bin/alembic upgrade head

lock:
	scripts/lock.sh

bench: setup train migrate
	scripts/bench.sh
