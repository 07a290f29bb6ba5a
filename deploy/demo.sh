#!/usr/bin/env bash
# The README's first command: see Coldchain work on this machine.
#
# Installs Mosquitto when missing, starts it on loopback (its own config, in
# .demo/), builds the daemon and the container simulator, registers simulated
# devices with a freshly minted key, runs them, and tells you where to look.
# Ctrl-C stops everything. Nothing outside this checkout is changed apart from
# installing the mosquitto packages.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo="$root/.demo"
mkdir -p "$demo"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo "$1"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
MQTT_PORT=${MQTT_PORT:-1883}
port_busy "$MQTT_PORT" && MQTT_PORT=$(free_port 18830)
HTTP_PORT=${HTTP_PORT:-8080}
port_busy "$HTTP_PORT" && HTTP_PORT=$(free_port 18080)

echo "==> building (first time: a few minutes)"
cargo build --locked -q -p coldchain-daemon -p coldchain-sim --bins
bin="$root/target/debug"
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/debug"

key_file="$demo/device.key"
[ -s "$key_file" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$key_file"
KEY=$(cat "$key_file")

cat > "$demo/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $demo/
max_inflight_messages 1000
max_queued_messages 0
CONF
# As root, mosquitto would drop to its own user, which cannot write into .demo/.
[ "$(id -u)" -eq 0 ] && echo "user root" >> "$demo/mosquitto.conf"

{
  cat <<CONF
[daemon]
id = "demo"
data_dir = "$demo/data"

[mqtt]
port = $MQTT_PORT

[http]
bind = "127.0.0.1:$HTTP_PORT"
CONF
  for d in ln2-1 ln2-2 ln2-3 fridge-1 ambient-1; do
    printf '\n[[devices]]\nid = "%s"\nkey = "%s"\n' "$d" "$KEY"
  done
} > "$demo/coldchain.toml"

pids=()
cleanup() {
  echo
  echo "==> stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$mosquitto_bin" -c "$demo/mosquitto.conf" > "$demo/mosquitto.log" 2>&1 & pids+=($!)
"$bin/coldchain" run --config "$demo/coldchain.toml" > "$demo/daemon.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do port_busy "$HTTP_PORT" && break; sleep 0.1; done

sim() { "$bin/coldchain-sim" --broker "127.0.0.1:$MQTT_PORT" --key "$KEY" --events "$@"; }
# Three LN2 dry shippers: one healthy, one whose nitrogen runs out soon, one tipped over.
sim --device ln2 --containers 1 --profile cryo-ln2 --speed 60 --interval-ms 2000 --seed 1 \
  > /dev/null 2> "$demo/sim-ln2-1.log" & pids+=($!)
true

cat <<MSG

Coldchain is running.
  API:        http://127.0.0.1:$HTTP_PORT/api/v1/devices
  readings:   http://127.0.0.1:$HTTP_PORT/api/v1/devices/ln2-1/readings
  counters:   http://127.0.0.1:$HTTP_PORT/api/v1/stats
  broker:     mosquitto_sub -p $MQTT_PORT -t 'coldchain/#' -v
  logs:       $demo/daemon.log, $demo/sim-*.log
  config:     $demo/coldchain.toml (device key in $demo/device.key)
Ctrl-C stops the demo.
MSG
wait
