#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis the tests use are up, starting them when they are
# installed but stopped. Exits non-zero (so CI fails, never skips) when one cannot be reached.
set -u
PGHOST=${DRL_TEST_PG_HOST:-127.0.0.1}
PGPORT=${DRL_TEST_PG_PORT:-5432}
REDIS_PORT=${DRL_TEST_REDIS_PORT:-6379}

pg_up()    { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

wait_for() {  # name, check-function
  for _ in $(seq 1 30); do "$2" && return 0; sleep 1; done
  echo "ensure_services: $1 is not reachable" >&2; return 1
}

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "ensure_services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for "PostgreSQL at $PGHOST:$PGPORT" pg_up || exit 1
fi

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "ensure_services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  wait_for "Redis at 127.0.0.1:$REDIS_PORT" redis_up || exit 1
fi
echo "ensure_services: PostgreSQL and Redis are up"

# The dashboard's browser test (tests/test_dashboard.py) drives Debian's chromium through
# Playwright; never a browser Playwright downloads. In CI (CI set) a missing browser fails.
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
  if command -v apt-get >/dev/null; then
    echo "ensure_services: installing Debian's chromium"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium || true
  fi
  if [ ! -x /usr/bin/chromium ]; then
    echo "ensure_services: /usr/bin/chromium is missing (apt-get install chromium)" >&2
    [ -n "${CI:-}" ] && exit 1
  fi
fi
