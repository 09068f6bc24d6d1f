#!/usr/bin/env bash
# `make demo`: a fresh local stack on its own database, the walk-through, then stop.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL=${DEMO_DATABASE_URL:-mysql://root@127.0.0.1:3306/backsync_demo}
export DJANGO_SETTINGS_MODULE=config.settings.local

if [[ -n $(scripts/stack.sh status | grep running || true) ]]; then
  echo "demo: a local stack is already running; stop it first with 'make down'" >&2
  exit 1
fi
# From nothing: the demo database is recreated (and only that one).
.venv/bin/python - <<'PYEOF'
import os
from urllib.parse import urlparse

import MySQLdb

url = urlparse(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
assert name.startswith("backsync_demo"), "refusing to drop a database not named backsync_demo*"
conn = MySQLdb.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                       user=url.username or "root", passwd=url.password or "")
cur = conn.cursor()
cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
PYEOF

# DEMO_KEEP_RUNNING=1 leaves the stack up afterwards (look around, then `make down`).
[[ ${DEMO_KEEP_RUNNING:-0} == 1 ]] || trap 'scripts/stack.sh down' EXIT
scripts/stack.sh up
export AWS_ENDPOINT_URL=http://127.0.0.1:${MOTO_PORT:-5000}
.venv/bin/python scripts/demo.py
