#!/usr/bin/env bash
# Runs every benchmark under bench/ and prints its figures (record them in bench/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLALCHEMY_SILENCE_UBER_WARNING=1 PYTHONPATH=.
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(date -u +%F)"
.venv/bin/python bench/nlu_accuracy.py
.venv/bin/python bench/train_time.py
.venv/bin/python bench/latency.py
.venv/bin/python -m bench.delivery
.venv/bin/python bench/reminders.py
