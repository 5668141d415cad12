# The two commands from README.md: `make run` and `make test`.
.PHONY: run test setup train lock bench

run: setup train
	.venv/bin/honcho start -f Procfile

test:
	scripts/test.sh

setup:
	scripts/bootstrap.sh

train: setup
	scripts/train.sh

lock:
	scripts/lock.sh

bench: setup train
	scripts/bench.sh
