#!/usr/bin/env bash
# The ingest benchmark of issue 4 (not a test): a release build of the load
# harness, which starts a real mosquitto, the release daemon, publishers and
# mosquitto_sub on loopback, and reports durable readings/s, the raw
# mosquitto_sub rate, their ratio, publish->durable p50/p99 and the daemon's
# peak RSS. Arguments go to the harness (see `--help`); by default the
# README's headline run, three times, best and median.
#
#   tests/bench.sh                       # headline: 8 x 4000 frames x 32 readings, 3 runs
#   tests/bench.sh --readings 4 --frames 8000
#   tests/bench.sh --rate 50000          # latency below saturation
#   tests/bench.sh criterion             # the criterion benches of the hot paths
#   tests/bench.sh fleet                 # evaluation at fleet scale: 1000 shipments x 7 days
#   tests/bench.sh fleet --shipments 100 --days 1   # the same, small and quick
#   tests/bench.sh fleet --postgres --instances 2    # the same on PostgreSQL, two daemons
#   tests/bench.sh drain                 # issue 15: drain queued backlogs (JSON 1 and 32
#                                        # readings, postcard 32) with mosquitto_sub -c,
#                                        # the daemon and tests/bench/drain_consumer.py
#   tests/bench.sh drain --shape json:50000x1 --perf /tmp/perf   # one shape, profiled
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "${1:-}" = criterion ]; then
  shift
  cargo bench -p coldchain-proto --bench codec "$@"
  cargo bench -p coldchain-daemon --bench ingest "$@"
  exit
fi
if [ "${1:-}" = fleet ]; then
  shift
  cargo build --release -p coldchain-tests --bin coldchain-fleet
  exec "$CARGO_TARGET_DIR/release/coldchain-fleet" "$@"
fi
cargo build --release -p coldchain-tests --bin coldchain-load
if [ "${1:-}" = drain ]; then
  shift
  # The Python consumer's own venv (paho-mqtt from PyPI), made once.
  venv="$CARGO_TARGET_DIR/drain-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import paho.mqtt.client' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r tests/bench/requirements.txt
  fi
  exec "$CARGO_TARGET_DIR/release/coldchain-load" drain --python "$venv/bin/python" \
    --consumer tests/bench/drain_consumer.py "$@"
fi
if [ $# -eq 0 ]; then
  set -- --devices 8 --frames 4000 --readings 32 --repeat 3
fi
exec "$CARGO_TARGET_DIR/release/coldchain-load" "$@"
