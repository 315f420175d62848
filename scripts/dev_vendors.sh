#!/usr/bin/env bash
# Start the five vendor sandboxes on 127.0.0.1:18081..18085 with demo cards (config/dev-vendors/),
# for `make run-vendors`. Each runs in the background; its pid and log are under .run/.
set -euo pipefail
python="${VENV:-.venv}/bin/python"
run_dir="${RUN_DIR:-.run}"
mkdir -p "$run_dir"
port=18081
for vendor in paytronix ackroo radial clutch smartclixx; do
  pid_file="$run_dir/sim-$vendor.pid"
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    kill "$(cat "$pid_file")" && sleep 0.2
  fi
  "$python" -m gateway.simulators "$vendor" --port "$port" \
    --cards "config/dev-vendors/$vendor-cards.json" >"$run_dir/sim-$vendor.log" 2>&1 &
  echo $! >"$pid_file"
  echo "$vendor sandbox on http://127.0.0.1:$port (merchant demo-$vendor, key dev-$vendor-key)"
  port=$((port + 1))
done
