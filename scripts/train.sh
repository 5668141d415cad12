#!/usr/bin/env bash
# Trains the model only when the training data, domain or config changed since
# the last model (Rasa compares fingerprints and keeps the old model otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLALCHEMY_SILENCE_UBER_WARNING=1
# Rasa reports usage and crashes to outside services unless told not to; nothing leaves this machine.
export RASA_TELEMETRY_ENABLED=false
.venv/bin/rasa train --domain domain --data nlu stories --config config.yml \
  --out models --fixed-model-name coproduction "$@"
