# The two commands from README.md: `make run` and `make test`.
.PHONY: run test setup train migrate lock bench

run: setup train migrate
	.venv/bin/honcho start -f Procfile

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
