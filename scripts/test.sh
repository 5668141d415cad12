#!/usr/bin/env bash
# Every test: data validation, training (if needed), pytest (actions, web chat,
# NLU quality, browser), and Rasa's conversation tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLALCHEMY_SILENCE_UBER_WARNING=1
# Rasa reports usage and crashes to outside services unless told not to; nothing leaves this machine.
export RASA_TELEMETRY_ENABLED=false
scripts/bootstrap.sh
scripts/browser-deps.sh
echo "== rasa data validate"
.venv/bin/rasa data validate --domain domain --data nlu stories --config config.yml --fail-on-warnings
echo "== training (skipped when nothing changed)"
scripts/train.sh
echo "== rasa test (conversation stories)"
rm -rf results/core
# Through components/rasa_server.py, so the stories run with the same changes to Rasa as the server.
.venv/bin/python -m components.rasa_server test core --model models --stories tests/stories --endpoints endpoints.yml \
  --fail-on-prediction-errors --out results/core
echo "== pytest"
.venv/bin/python -m pytest
