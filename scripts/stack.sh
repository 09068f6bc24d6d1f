#!/usr/bin/env bash
# The local stack: moto (local AWS), the web app, the Celery worker and the stream relay.
#
#   scripts/stack.sh up       start what is not running, wait until healthy, print the URLs
#   scripts/stack.sh down     stop what `up` started (recorded process groups), nothing else
#   scripts/stack.sh status   show what is recorded and whether it runs
#
# Settings (environment): SERVICES="moto web worker relay" (any subset, in this order),
# MOTO_PORT=5000, WEB_PORT=8000, RUN_DIR=.run (pids; logs in $RUN_DIR/logs), UP_TIMEOUT=60,
# STOP_TIMEOUT=10, VENV=.venv. Each service runs in its own session, so `down` stops its
# whole process group (runserver children, celery pool processes) by the recorded id.
# `up` writes the environment it used (endpoint, credentials, database) to $RUN_DIR/env:
# `source .run/env` in another shell; manage.py with local settings reads .run/env by
# itself. `down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
RUN_DIR=${RUN_DIR:-.run}
LOG_DIR="$RUN_DIR/logs"
MOTO_PORT=${MOTO_PORT:-5000}
WEB_PORT=${WEB_PORT:-8000}
SERVICES=${SERVICES:-"moto web worker relay"}
UP_TIMEOUT=${UP_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
ALL_SERVICES=(moto web worker relay)

export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.local}
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION}
export PYTHONUNBUFFERED=1
# Web, worker and relay write their Prometheus counters here; /metrics reads them all.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$PWD/$RUN_DIR/prometheus}

log() { echo "stack: $*"; }
die() { echo "stack: error: $*" >&2; exit 1; }

# A word in each service's command line: a recorded pid is only ours if it still matches
# (guards against a pid reused by an unrelated process after a reboot or crash).
marker() {
  case $1 in
    moto) echo "moto.server" ;;
    web) echo "runserver" ;;
    worker) echo "celery" ;;
    relay) echo "relay_stream" ;;
  esac
}

pidfile() { echo "$RUN_DIR/$1.pid"; }

ENV_FILE="$RUN_DIR/env"
# What another shell (or manage.py) needs to reach this stack rather than real AWS.
ENV_VARS=(DJANGO_SETTINGS_MODULE AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  AWS_REGION AWS_DEFAULT_REGION DATABASE_URL CELERY_BROKER_URL PROMETHEUS_MULTIPROC_DIR)

write_env() {
  local name
  (
    umask 077 # DATABASE_URL may hold a password
    {
      echo "# Written by scripts/stack.sh up; removed by down. In a shell: source $ENV_FILE"
      for name in "${ENV_VARS[@]}"; do
        [[ -n ${!name:-} ]] || continue
        # Single quotes, read literally by both bash and django-environ.
        [[ ${!name} != *"'"* ]] || die "$name contains a single quote; cannot write $ENV_FILE"
        printf "export %s='%s'\n" "$name" "${!name}"
      done
    } >"$ENV_FILE.tmp"
  )
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# The recorded pid of a service whose leader is alive and is still our process, or nothing.
running_pid() {
  local f pid
  f=$(pidfile "$1")
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(marker "$1")"; then
    echo "$pid"
  fi
}

group_alive() { [[ -n $(pgrep -g "$1" 2>/dev/null || true) ]]; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_healthy <service> <check...>: poll the check until it succeeds, with a deadline;
# fail at once if the service has exited.
wait_healthy() {
  local name=$1
  shift
  local deadline=$((SECONDS + UP_TIMEOUT))
  until "$@"; do
    alive_or_fail "$name" || return 1
    if ((SECONDS >= deadline)); then
      log "$name: not healthy after ${UP_TIMEOUT}s; see $LOG_DIR/$name.log"
      return 1
    fi
    sleep 0.3
  done
  log "$name healthy"
}

http_ok() { [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1") == 200 ]]; }

start() {
  local name=$1
  shift
  local pid
  pid=$(running_pid "$name")
  if [[ -n $pid ]]; then
    log "$name already running (pid $pid)"
    return 0
  fi
  rm -f "$(pidfile "$name")"
  # setsid: the service leads its own process group, which `down` signals as a whole.
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  log "$name started (pid $!, log $LOG_DIR/$name.log)"
}

alive_or_fail() {
  local name=$1 pid
  pid=$(running_pid "$name")
  if [[ -z $pid ]]; then
    log "$name exited; last lines of $LOG_DIR/$name.log:"
    tail -n 20 "$LOG_DIR/$name.log" >&2 || true
    return 1
  fi
}

worker_ready() { grep -q " ready\." "$LOG_DIR/worker.log"; }

# Services still alive after a short while: a relay that crashes at start fails `up`.
stays_up() {
  local name=$1
  sleep 2
  alive_or_fail "$name"
}

wants() { [[ " $SERVICES " == *" $1 "* ]]; }

settings_value() {
  "$PY" -c "import django; django.setup(); from django.conf import settings; print(settings.$1)"
}

db_ensure() {
  # migrate needs the database itself to exist; create it (utf8mb4) if it does not.
  "$PY" - <<'PYEOF'
import django

django.setup()
from django.conf import settings
from django.db import connection

db = settings.DATABASES["default"]
if connection.vendor == "mysql":  # also the dialect-guarded backend (config.dbguard)
    import MySQLdb

    try:
        conn = MySQLdb.connect(
            host=db.get("HOST") or "127.0.0.1",
            port=int(db.get("PORT") or 3306),
            user=db.get("USER") or "root",
            passwd=db.get("PASSWORD") or "",
        )
    except MySQLdb.OperationalError as exc:
        raise SystemExit(f"stack: error: MySQL is not reachable: {exc}") from None
    name = db["NAME"].replace("`", "``")
    conn.cursor().execute(
        f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    conn.close()
PYEOF
}

up() {
  [[ -x $PY ]] || die "$PY not found; run scripts/bootstrap.sh (make setup) first"
  mkdir -p "$LOG_DIR"
  # Counters of processes from an earlier run would be summed in: start clean.
  if [[ -z $(running_pid web)$(running_pid worker)$(running_pid relay) ]]; then
    rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"
  fi
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  for s in $SERVICES; do
    [[ " ${ALL_SERVICES[*]} " == *" $s "* ]] || die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
  done

  if wants moto; then
    if [[ -z $(running_pid moto) ]] && port_busy "$MOTO_PORT"; then
      log "port $MOTO_PORT is in use by a process this stack did not start (set MOTO_PORT)"
      fail_up
    fi
    start moto "$PY" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT"
    wait_healthy moto http_ok "$AWS_ENDPOINT_URL/moto-api/" || fail_up
  else
    http_ok "$AWS_ENDPOINT_URL/moto-api/" || die "moto is not in SERVICES and $AWS_ENDPOINT_URL does not answer"
  fi
  write_env

  db_ensure || fail_up
  "$PY" manage.py migrate --noinput >>"$LOG_DIR/setup.log" 2>&1 || {
    tail -n 20 "$LOG_DIR/setup.log" >&2
    fail_up
  }
  "$PY" manage.py dynamo_setup 2>&1 | tee -a "$LOG_DIR/setup.log" | sed 's/^/stack: dynamo_setup: /' \
    || fail_up

  if wants web; then
    if [[ -z $(running_pid web) ]] && port_busy "$WEB_PORT"; then
      log "port $WEB_PORT is in use by a process this stack did not start (set WEB_PORT)"
      fail_up
    fi
    start web "$PY" manage.py runserver --noreload "127.0.0.1:$WEB_PORT"
    wait_healthy web http_ok "http://127.0.0.1:$WEB_PORT/admin/login/" || fail_up
  fi
  if wants worker; then
    local queues
    queues=$(settings_value 'SYNC_QUEUE_NAME + "," + settings.OUTBOX_QUEUE_NAME + "," + settings.RECONCILE_QUEUE_NAME')
    # --beat: the outbox sweep (republishes lost publish tasks) runs with the worker.
    start worker "$VENV/bin/celery" -A config worker -Q "$queues" --concurrency 2 -l info \
      --beat --schedule "$RUN_DIR/celerybeat-schedule"
    wait_healthy worker worker_ready || fail_up
  fi
  if wants relay; then
    # Lambda polls a shard about four times a second; so does the local relay.
    start relay "$PY" manage.py relay_stream --poll-interval 0.25
    stays_up relay || fail_up
  fi

  log "up: ${SERVICES}"
  wants moto && log "  local AWS (moto)   $AWS_ENDPOINT_URL   (dashboard: $AWS_ENDPOINT_URL/moto-api/)"
  if wants web; then
    log "  web                http://127.0.0.1:$WEB_PORT/"
    log "  new API            http://127.0.0.1:$WEB_PORT/dynamo/chefs"
    log "  legacy API         http://127.0.0.1:$WEB_PORT/aurora/chefs"
    log "  API docs           http://127.0.0.1:$WEB_PORT/api/docs/"
    log "  admin              http://127.0.0.1:$WEB_PORT/admin/"
  fi
  log "  logs               $LOG_DIR/   (stop with: make down)"
  log "  environment        source $(cd "$RUN_DIR" && pwd)/env   (manage.py reads it by itself)"
}

# A failed `up` leaves nothing half-started behind.
fail_up() {
  log "up failed; stopping what was started"
  down
  exit 1
}

stop_one() {
  local name=$1 f pid
  f=$(pidfile "$name")
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if [[ ! $pid =~ ^[0-9]+$ ]]; then
    rm -f "$f"
    return 0
  fi
  # Signal the group only if its leader is still ours or the leader is gone but members of
  # its group remain (an orphaned pool process, for instance).
  if [[ -n $(running_pid "$name") ]] || { [[ ! -e /proc/$pid ]] && group_alive "$pid"; }; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if group_alive "$pid"; then
      log "$name did not stop in ${STOP_TIMEOUT}s; killing"
      kill -KILL -- "-$pid" 2>/dev/null || true
      while group_alive "$pid"; do sleep 0.1; done
    fi
    log "$name stopped (pid $pid)"
  fi
  rm -f "$f"
}

down() {
  # Reverse start order: consumers first, moto last. Every recorded service is stopped,
  # whatever SERVICES says now.
  local i
  for ((i = ${#ALL_SERVICES[@]} - 1; i >= 0; i--)); do
    stop_one "${ALL_SERVICES[i]}"
  done
  rm -f "$ENV_FILE" "$ENV_FILE.tmp"
}

status() {
  local s pid
  for s in "${ALL_SERVICES[@]}"; do
    pid=$(running_pid "$s")
    if [[ -n $pid ]]; then echo "$s: running (pid $pid)"; else echo "$s: stopped"; fi
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
