#!/usr/bin/env bash
# Mints a Coldchain device: its 32-byte HMAC key and its broker credentials,
# together, and registers it with the daemon.
#
#   mint-device.sh [options] DEVICE_ID
#       --config FILE     daemon config to register the device in
#                         (default /etc/coldchain/coldchain.toml)
#       --passwd FILE     Mosquitto password file to add the device to
#                         (default /etc/mosquitto/coldchain/passwd; created if missing)
#       --no-passwd       no broker password (client certificates only)
#       --pki DIR         also issue a client certificate (CN = DEVICE_ID) signed
#                         by the CA in DIR (made with --init-pki)
#       --out DIR         where the device's secrets are written
#                         (default ./coldchain-secrets; directory 0700, files 0600)
#       --rotate          the device is already registered: give it a new key
#                         (and a new broker password / certificate)
#       --daemon-user U   the daemon's broker account, which no device may be
#                         named after (default coldchain-daemon)
#       --quiet           do not print the secrets (they are still in --out)
#
#   mint-device.sh --broker-account USER [--passwd FILE] [--out DIR]
#       a broker password for a service account (the daemon: coldchain-daemon)
#
#   mint-device.sh --init-pki DIR --broker-name NAME[,NAME...]
#       a local CA (DIR/ca.pem, DIR/ca.key) and the broker's certificate
#       (DIR/broker.pem, DIR/broker.key) for the given DNS names / IP addresses.
#       Existing files are kept.
#
#   mint-device.sh --init-pki DIR --https-name NAME[,NAME...]
#       the same local CA and the daemon's HTTPS certificate (DIR/https.pem,
#       DIR/https.key) for the names browsers use (http.tls_cert, http.tls_key;
#       browsers and `coldchain --ca-file` trust DIR/ca.pem). May be given
#       together with --broker-name.
#
# The daemon reads its devices at start: restart it after minting
# (systemctl restart coldchain). Mosquitto re-reads its password file on
# SIGHUP (systemctl reload mosquitto).
#
# The secrets are printed once and written to DIR/DEVICE_ID.secret (0600):
# provision the device with them, then delete the file. The key also sits in
# the daemon config, which must stay readable only by root and the daemon.
set -euo pipefail
umask 077

die() { echo "mint-device: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

config=/etc/coldchain/coldchain.toml
passwd=/etc/mosquitto/coldchain/passwd
use_passwd=1
pki=
out=./coldchain-secrets
rotate=0
quiet=0
daemon_user=coldchain-daemon
init_pki=
broker_names=
https_names=
broker_account=
id=

while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --passwd) passwd=${2:?--passwd needs a file}; shift 2 ;;
    --no-passwd) use_passwd=0; shift ;;
    --pki) pki=${2:?--pki needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --rotate) rotate=1; shift ;;
    --quiet) quiet=1; shift ;;
    --daemon-user) daemon_user=${2:?--daemon-user needs a name}; shift 2 ;;
    --init-pki) init_pki=${2:?--init-pki needs a directory}; shift 2 ;;
    --broker-name) broker_names=${2:?--broker-name needs names}; shift 2 ;;
    --https-name) https_names=${2:?--https-name needs names}; shift 2 ;;
    --broker-account) broker_account=${2:?--broker-account needs a user}; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (--help for usage)" ;;
    *) [ -z "$id" ] || die "one DEVICE_ID only"; id=$1; shift ;;
  esac
done

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

random_hex() { # $1 bytes
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex "$1"
  else
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
  fi
}

# ---------------------------------------------------------------- the CA
if [ -n "$init_pki" ]; then
  need openssl "apt-get install openssl"
  [ -n "$broker_names$https_names" ] || die "--init-pki needs --broker-name (the names devices connect to) or --https-name (the names browsers use)"
  mkdir -p "$init_pki"
  chmod 0700 "$init_pki"
  if [ ! -s "$init_pki/ca.pem" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
      -keyout "$init_pki/ca.key" -out "$init_pki/ca.pem" -days 3650 -sha256 \
      -subj "/CN=Coldchain local CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    echo "CA: $init_pki/ca.pem (its key $init_pki/ca.key: keep it off the gateway if you can)"
  fi
  # issue NAME NAMES: a server certificate DIR/NAME.pem and key for NAMES.
  issue() {
    local base=$1 san= n
    [ -s "$init_pki/$base.pem" ] && return 0
    IFS=, read -r -a names <<<"$2"
    for n in "${names[@]}"; do
      if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
    done
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
      -keyout "$init_pki/$base.key" -out "$init_pki/$base.csr" \
      -subj "/CN=${names[0]}" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
      "${san%,}" >"$init_pki/$base.ext"
    openssl x509 -req -in "$init_pki/$base.csr" -CA "$init_pki/ca.pem" -CAkey "$init_pki/ca.key" \
      -CAcreateserial -out "$init_pki/$base.pem" -days 825 -sha256 \
      -extfile "$init_pki/$base.ext" 2>/dev/null
    rm -f "$init_pki/$base.csr" "$init_pki/$base.ext"
    chmod 0644 "$init_pki/$base.pem"
    chmod 0600 "$init_pki/$base.key"
    echo "$base certificate: $init_pki/$base.pem for ${san%,}"
  }
  [ -z "$broker_names" ] || issue broker "$broker_names"
  [ -z "$https_names" ] || issue https "$https_names"
  # Public parts are world-readable; keys are not (give Mosquitto's group
  # read access to broker.key, the daemon's user to https.key, when installing).
  chmod 0644 "$init_pki/ca.pem"
  chmod 0600 "$init_pki/ca.key"
  exit 0
fi

# Adds or updates USER with password PASS in the Mosquitto password file
# (the password goes through a pipe, never on a command line).
set_broker_password() {
  need mosquitto_passwd "apt-get install mosquitto"
  mkdir -p "$(dirname "$passwd")"
  if [ ! -e "$passwd" ]; then
    : >"$passwd"
    # Mosquitto reads it after dropping to its own user (and on every reload).
    if getent group mosquitto >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
      chgrp mosquitto "$passwd"
      chmod 0640 "$passwd"
    fi
  fi
  printf '%s\n%s\n' "$2" "$2" | mosquitto_passwd "$passwd" "$1" >/dev/null
}

write_secret() { # $1 file; content on stdin
  mkdir -p "$out"
  chmod 0700 "$out"
  cat >"$1"
  chmod 0600 "$1"
}

# ----------------------------------------------------- a service account
if [ -n "$broker_account" ]; then
  [[ $broker_account =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "bad account name $broker_account"
  pass=$(random_hex 24)
  set_broker_password "$broker_account" "$pass"
  f="$out/$broker_account.secret"
  write_secret "$f" <<EOF
MQTT_USERNAME=$broker_account
MQTT_PASSWORD=$pass
EOF
  if [ "$quiet" -eq 0 ]; then
    echo "broker account $broker_account in $passwd; in coldchain.toml [mqtt]:"
    echo "username = \"$broker_account\""
    echo "password = \"$pass\""
  fi
  echo "secret written to $f (0600)" >&2
  exit 0
fi

# ------------------------------------------------------------- a device
[ -n "$id" ] || usage
[[ $id =~ ^[A-Za-z0-9._-]{1,32}$ ]] ||
  die "device id $id: expected 1-32 characters of A-Z a-z 0-9 . _ -"
[ "$id" != "$daemon_user" ] || die "device id $id is the daemon's broker account"
[ -f "$config" ] || die "config file $config not found (--config FILE)"
[ -w "$config" ] || die "config file $config is not writable (run as root?)"
if [ -n "$pki" ]; then
  need openssl "apt-get install openssl"
  if [ ! -s "$pki/ca.pem" ] || [ ! -s "$pki/ca.key" ]; then
    die "no CA in $pki (make one with --init-pki)"
  fi
fi

# Is DEVICE_ID in a [[devices]] table of the config already?
registered() {
  awk -v id="$id" '
    /^[[:space:]]*\[/ { dev = ($0 ~ /^[[:space:]]*\[\[[[:space:]]*devices[[:space:]]*\]\]/) }
    dev && $0 ~ "^[[:space:]]*id[[:space:]]*=[[:space:]]*\"" id "\"" { found = 1 }
    END { exit !found }' "$config"
}

key=$(random_hex 32)
[ ${#key} -eq 64 ] || die "could not make a key"

if registered; then
  [ "$rotate" -eq 1 ] || die "device $id is already in $config (--rotate gives it a new key)"
  # Replace the key line of that device's [[devices]] table, keeping
  # everything else (comments, settings, other devices) as it is.
  tmp=$(mktemp "$config.XXXXXX")
  cp -p "$config" "$tmp"
  awk -v id="$id" -v key="$key" '
    function flush(   i) {
      for (i = 1; i <= n; i++) {
        if (mine && buf[i] ~ /^[[:space:]]*key[[:space:]]*=/) buf[i] = "key = \"" key "\""
        print buf[i]
      }
      n = 0; mine = 0
    }
    /^[[:space:]]*\[/ { flush(); dev = ($0 ~ /^[[:space:]]*\[\[[[:space:]]*devices[[:space:]]*\]\]/) }
    dev && $0 ~ "^[[:space:]]*id[[:space:]]*=[[:space:]]*\"" id "\"" { mine = 1 }
    { buf[++n] = $0 }
    END { flush() }' "$config" >"$tmp"
  mv "$tmp" "$config"
  action="rotated the key of"
else
  [ "$rotate" -eq 0 ] || die "device $id is not in $config: nothing to rotate"
  # Keep a newline between the file and the new table.
  [ ! -s "$config" ] || [ -z "$(tail -c1 "$config")" ] || echo >>"$config"
  cat >>"$config" <<EOF

[[devices]]
id = "$id"
key = "$key"
allow_unsigned_json = false
EOF
  action="registered"
fi
if command -v coldchain >/dev/null 2>&1; then
  coldchain check-config --config "$config" >/dev/null ||
    die "coldchain check-config refuses $config after the change: fix it before restarting"
fi

f="$out/$id.secret"
{
  echo "COLDCHAIN_DEVICE_ID=$id"
  echo "COLDCHAIN_DEVICE_KEY=$key"
} | write_secret "$f"

if [ "$use_passwd" -eq 1 ]; then
  pass=$(random_hex 24)
  set_broker_password "$id" "$pass"
  printf 'MQTT_USERNAME=%s\nMQTT_PASSWORD=%s\n' "$id" "$pass" >>"$f"
fi

if [ -n "$pki" ]; then
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$out/$id.key" -out "$out/$id.csr" -subj "/CN=$id" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' >"$out/$id.ext"
  openssl x509 -req -in "$out/$id.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
    -CAcreateserial -out "$out/$id.pem" -days 825 -sha256 -extfile "$out/$id.ext" 2>/dev/null
  rm -f "$out/$id.csr" "$out/$id.ext"
  chmod 0600 "$out/$id.key" "$out/$id.pem"
  printf 'MQTT_CLIENT_CERT=%s\nMQTT_CLIENT_KEY=%s\nMQTT_CA=%s\n' \
    "$out/$id.pem" "$out/$id.key" "$pki/ca.pem" >>"$f"
fi

if [ "$quiet" -eq 0 ]; then
  echo "# $action device $id in $config. Provision the device with:"
  cat "$f"
fi
{
  echo "secrets written to $f (0600): provision the device, then delete them"
  echo "next: restart the daemon (systemctl restart coldchain): it reads devices at start"
  [ "$use_passwd" -eq 0 ] || echo "      reload the broker (systemctl reload mosquitto): it re-reads $passwd"
  if [ "$rotate" -eq 1 ]; then
    echo "      frames the device signed with its old key and has not sent yet will be"
    echo "      refused (bad_tag): drain its queue before rotating (deploy/README.md)"
  fi
} >&2
