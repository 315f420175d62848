#!/usr/bin/env bash
# Start (or reuse) the local development Redis on 127.0.0.1:${REDIS_PORT:-6379}, AOF on with
# appendfsync always (the native ledger's durability default, DESIGN.md section 5).
set -euo pipefail
port="${REDIS_PORT:-6379}"
dir="${RUN_DIR:-.run}/redis"
mkdir -p "$dir"
server="$(bash scripts/ensure_redis.sh)"
cli="$(dirname "$server")/redis-cli"
if [ -x "$cli" ] && "$cli" -p "$port" ping >/dev/null 2>&1; then
  echo "redis already running on 127.0.0.1:$port"
  exit 0
fi
"$server" --port "$port" --bind 127.0.0.1 --dir "$(cd "$dir" && pwd)" --appendonly yes \
  --appendfsync always --save "" --daemonize yes --pidfile "$(cd "$dir" && pwd)/redis.pid" \
  --logfile "$(cd "$dir" && pwd)/redis.log"
for _ in $(seq 50); do
  if [ ! -x "$cli" ] || "$cli" -p "$port" ping >/dev/null 2>&1; then break; fi
  sleep 0.1
done
echo "redis started on 127.0.0.1:$port (data in $dir)"
