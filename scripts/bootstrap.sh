#!/usr/bin/env bash
# Creates .venv with the Python in .python-version and installs requirements.lock
# (again only when the lock file changed). Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

want="$(cat .python-version)"
py=""
if command -v pyenv >/dev/null 2>&1; then
  root="$(pyenv root)"
  [ -x "$root/versions/$want/bin/python" ] || pyenv install -s "$want"
  py="$root/versions/$want/bin/python"
elif command -v "python${want%.*}" >/dev/null 2>&1; then
  py="$(command -v "python${want%.*}")"
else
  echo "Python ${want%.*} is needed (pyenv install $want)." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then
  rm -rf .venv
  "$py" -m venv .venv
fi

hash="$(sha256sum requirements.lock | cut -c1-16)"
if [ "$(cat .venv/.lock-hash 2>/dev/null || true)" != "$hash" ]; then
  echo "Installing pinned dependencies into .venv (first run takes a few minutes)..."
  .venv/bin/python -m pip install --quiet --upgrade "pip==24.3.1"
  .venv/bin/python -m pip install --quiet --no-input -r requirements.lock
  echo "$hash" > .venv/.lock-hash
fi
mkdir -p data
