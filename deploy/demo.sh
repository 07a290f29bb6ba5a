#!/usr/bin/env bash
# The README's first command: see Coldchain work on this machine.
#
# Installs Mosquitto when missing, starts it on loopback (its own config, in
# .demo/), builds the daemon and the container simulator, registers simulated
# devices with a freshly minted key, runs them, and tells you where to look.
# Everything stays in .demo/ between runs: the database, the key, and the
# simulated loggers' flash (.demo/sim/), so running it again goes on.
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
# The daemon's 65536-byte uplink payload limit plus 1 KiB (deploy/mosquitto/prod.conf).
max_packet_size 66560
CONF
# As root, mosquitto would drop to its own user, which cannot write into .demo/.
[ "$(id -u)" -eq 0 ] && echo "user root" >> "$demo/mosquitto.conf"

token_file="$demo/api.token"
[ -s "$token_file" ] || od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$token_file"
TOKEN=$(cat "$token_file")

{
  cat <<CONF
[daemon]
id = "demo"
data_dir = "$demo/data"

[mqtt]
port = $MQTT_PORT

[http]
bind = "127.0.0.1:$HTTP_PORT"
token = "$TOKEN"

[alerts]
# A short settle period so the demo shows alarms within minutes.
settle_s = 60
CONF
  for d in ln2-1 ln2-2 fridge-1; do
    printf '\n[[devices]]\nid = "%s"\nkey = "%s"\n' "$d" "$KEY"
  done
} > "$demo/coldchain.toml"

pids=()
cleanup() {
  echo
  echo "==> stopping (data stays in $demo/data)"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$mosquitto_bin" -c "$demo/mosquitto.conf" > "$demo/mosquitto.log" 2>&1 & pids+=($!)
"$bin/coldchain" run --config "$demo/coldchain.toml" > "$demo/daemon.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do port_busy "$HTTP_PORT" && break; sleep 0.1; done

export COLDCHAIN_API="http://127.0.0.1:$HTTP_PORT" COLDCHAIN_TOKEN="$TOKEN" COLDCHAIN_USER="demo dispatcher"
cc() { "$bin/coldchain" "$@"; }
# Two people for the dashboard (the shared token is an admin identity that
# adds them; it cannot sign): passwords kept in .demo/ between runs.
pw_file="$demo/passwords"
if [ ! -s "$pw_file" ]; then
  printf 'lou %s\nquinn %s\n' "$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" \
    "$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" > "$pw_file"
fi
LOU_PW=$(awk '$1 == "lou" { print $2 }' "$pw_file")
QUINN_PW=$(awk '$1 == "quinn" { print $2 }' "$pw_file")
echo "$LOU_PW" | cc user add lou --role logistics --full-name "Lou (demo logistics)" >/dev/null 2>&1 || true
echo "$QUINN_PW" | cc user add quinn --role qa --full-name "Quinn (demo QA)" >/dev/null 2>&1 || true
run_id=$(date +%H%M%S)
# ISO 7064 Mod 37-2 check character of a DIN's 13 data characters: the daemon
# refuses a DIN whose check character is wrong.
din_check() {
  local a=0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ s=0 i c
  for ((i = 0; i < ${#1}; i++)); do c=${a%%"${1:i:1}"*}; s=$(((s + ${#c}) * 2 % 37)); done
  local v=$(((38 - s) % 37))
  if ((v == 36)); then echo '*'; else echo "${a:v:1}"; fi
}
cc shipment create --id "CAR-T $run_id" --product "CAR-T, 2 bags" \
  --din "W0000 26 $run_id 00 $(din_check "W000026$run_id")" \
  --profile cryo-ln2 --device ln2-1 --origin "Apheresis centre" --destination "Cell therapy lab" \
  --eta +48h --depart >/dev/null
cc shipment create --id "HSC $run_id" --product "Cryopreserved HSC" --profile cryo-ln2 --device ln2-2 \
  --origin "Cord blood bank" --destination "Transplant centre" --eta +30h --depart >/dev/null
cc shipment create --id "PBSC $run_id" --product "Fresh PBSC" --profile fridge --device fridge-1 \
  --origin "Donor centre" --destination "Processing lab" --window-h 48 --collected now --eta +6h --depart >/dev/null

# Each simulated logger keeps its flash (boot counter, unsent frames) in
# .demo/sim/, so a second run goes on at the next boot, as a real logger does
# after a restart, instead of reusing sequence numbers (a tamper alarm).
sim() { "$bin/coldchain-sim" --broker "127.0.0.1:$MQTT_PORT" --key "$KEY" --events --interval-ms 2000 --state-dir "$demo/sim" "$@"; }
# A healthy dry shipper; one whose nitrogen runs out in a few minutes (model
# time runs 120 times faster: it warms about 6 °C per minute once dry); a
# 2-8 °C box.
sim --device ln2-1 --profile cryo-ln2 --seed 1 > /dev/null 2> "$demo/sim-ln2-1.log" & pids+=($!)
sim --device ln2-2 --profile cryo-ln2 --seed 2 --speed 120 --dry-in-h 0.05 > /dev/null 2> "$demo/sim-ln2-2.log" & pids+=($!)
sim --device fridge-1 --profile fridge --seed 3 > /dev/null 2> "$demo/sim-fridge-1.log" & pids+=($!)

cat <<MSG

Coldchain is running with three simulated shipments.

  Dashboard   http://127.0.0.1:$HTTP_PORT/
              log in as lou (logistics: acknowledge), password $LOU_PW,
              or quinn (QA: assess, sign the disposition), password $QUINN_PW
  Terminal    export COLDCHAIN_API=http://127.0.0.1:$HTTP_PORT COLDCHAIN_TOKEN=$TOKEN
              $bin/coldchain status
              $bin/coldchain alerts --open
              $bin/coldchain ack ALERT_ID --comment "what you did"
              $bin/coldchain report "HSC $run_id" --format html --out report.html
              $bin/coldchain report "HSC $run_id" --format pdf --out report.pdf
              $bin/coldchain report --verify report.pdf

Within about a minute the dry shipper of "HSC $run_id" starts warming: a
predictive warning comes first, the critical alarm (above -135 °C) within
about ten minutes. Logs: $demo/daemon.log, $demo/sim-*.log. Ctrl-C stops the demo.
MSG
wait
