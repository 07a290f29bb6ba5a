#!/usr/bin/env bash
# Installs the Coldchain daemon on this machine (or into DESTDIR).
#
#   deploy/install.sh [--bin PATH] [--prefix PREFIX] [--destdir DIR] [--no-enable] [--start]
#                     [--https-name NAME[,NAME...]]
#
#   --bin PATH      the `coldchain` binary (default target/release/coldchain;
#                   build it with `cargo build --release --locked -p coldchain-daemon`)
#   --prefix DIR    default /usr/local: DIR/bin/coldchain, DIR/sbin/coldchain-mint-device,
#                   DIR/share/coldchain (Mosquitto configs, example config),
#                   DIR/share/doc/coldchain/README.md
#   --destdir DIR   (or DESTDIR=DIR) install under DIR, for packaging or a test:
#                   no user is created, no ownership changed, systemd not touched
#   --no-enable     do not enable the unit
#   --start         start the daemon (restart it if it runs); without it a
#                   running daemon is restarted (upgrade) and a stopped one left
#   --https-name N  make a local CA and the daemon's HTTPS certificate for the
#                   names browsers use (e.g. gateway.lab.local,192.168.1.20) in
#                   /etc/coldchain/pki (kept if present; coldchain-mint-device
#                   --init-pki) and, in a newly installed config, set
#                   http.tls_cert and http.tls_key. Browsers and `coldchain
#                   --ca-file` trust /etc/coldchain/pki/ca.pem.
#
# Puts in place:
#   /etc/systemd/system/coldchain.service     (replaced: it is ours)
#   /etc/coldchain/coldchain.toml             (only if absent, from the example,
#                                              without its example device)
#   the `coldchain` system user and group     (if absent)
# and enables coldchain.service. Running it again is safe: it upgrades the
# binary and the unit and keeps the config.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin=
prefix=/usr/local
destdir=${DESTDIR:-}
enable=1
start=0
https_names=

die() { echo "install: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
    --no-enable) enable=0; shift ;;
    --start) start=1; shift ;;
    --https-name) https_names=${2:?--https-name needs names}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (--help for usage)" ;;
  esac
done
case "$prefix" in /*) ;; *) die "--prefix must be absolute" ;; esac
prefix=${prefix%/}
if [ -n "$destdir" ]; then
  mkdir -p "$destdir"
  destdir=$(cd "$destdir" && pwd)
fi
real=1
[ -z "$destdir" ] || real=0

if [ -z "$bin" ]; then
  bin="$repo/target/release/coldchain"
  [ -x "$bin" ] || die "no binary at $bin: build it (cargo build --release --locked -p coldchain-daemon) or pass --bin"
fi
[ -x "$bin" ] || die "--bin $bin is not an executable"
"$bin" --version >/dev/null 2>&1 || die "$bin does not run here (built for another machine?)"
if [ "$real" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (or with --destdir DIR to install into a directory)"
fi

say() { echo "==> $*"; }
D=$destdir

# The user the unit runs as. /var/lib/coldchain itself is made by systemd
# (StateDirectory=), owned by this user.
if [ "$real" -eq 1 ]; then
  if ! getent group coldchain >/dev/null; then
    groupadd --system coldchain
  fi
  if ! getent passwd coldchain >/dev/null; then
    useradd --system --gid coldchain --home-dir /var/lib/coldchain --no-create-home \
      --shell /usr/sbin/nologin --comment "Coldchain daemon" coldchain
    say "created system user coldchain"
  fi
else
  say "DESTDIR install: not creating the coldchain user, not touching systemd"
fi

# Files replaced atomically (a running daemon keeps its old binary open).
put() { # mode src dst
  mkdir -p "$(dirname "$3")"
  local tmp
  tmp=$(mktemp "$(dirname "$3")/.install.XXXXXX")
  install -m "$1" "$2" "$tmp"
  mv -f "$tmp" "$3"
}

put 0755 "$bin" "$D$prefix/bin/coldchain"
put 0755 "$here/mint-device.sh" "$D$prefix/sbin/coldchain-mint-device"
put 0644 "$here/mosquitto/dev.conf" "$D$prefix/share/coldchain/mosquitto/dev.conf"
put 0644 "$here/mosquitto/prod.conf" "$D$prefix/share/coldchain/mosquitto/prod.conf"
put 0644 "$here/mosquitto/acl" "$D$prefix/share/coldchain/mosquitto/acl"
put 0644 "$here/coldchain.example.toml" "$D$prefix/share/coldchain/coldchain.example.toml"
put 0644 "$here/README.md" "$D$prefix/share/doc/coldchain/README.md"
say "installed $D$prefix/bin/coldchain ($("$bin" --version))"

# The unit, with this prefix's paths.
unit="$D/etc/systemd/system/coldchain.service"
unit_tmp=$(mktemp)
sed -e "s#/usr/local/bin/coldchain#$prefix/bin/coldchain#g" \
  -e "s#/usr/local/share/doc/coldchain#$prefix/share/doc/coldchain#g" \
  "$here/systemd/coldchain.service" >"$unit_tmp"
unit_changed=1
if [ -f "$unit" ] && cmp -s "$unit_tmp" "$unit"; then unit_changed=0; fi
put 0644 "$unit_tmp" "$unit"
rm -f "$unit_tmp"
say "installed $unit"

# The config: never overwritten. From the example, with its example device
# commented out (its key is public).
etc="$D/etc/coldchain"
mkdir -p "$etc"
chmod 0750 "$etc"
[ "$real" -eq 0 ] || chgrp coldchain "$etc"
cfg="$etc/coldchain.toml"
if [ -e "$cfg" ]; then
  say "kept the existing $cfg"
else
  cfg_tmp=$(mktemp "$etc/.install.XXXXXX")
  {
    echo "# Installed by deploy/install.sh from coldchain.example.toml."
    echo "# Register devices with: $prefix/sbin/coldchain-mint-device --config /etc/coldchain/coldchain.toml DEVICE_ID"
    echo
    awk '
      /^[[:space:]]*\[/ { dev = ($0 ~ /^[[:space:]]*\[+[[:space:]]*devices[].]/) }
      dev && $0 !~ /^[[:space:]]*(#|$)/ { print "# " $0; next }
      { print }' "$here/coldchain.example.toml"
  } >"$cfg_tmp"
  chmod 0640 "$cfg_tmp"
  [ "$real" -eq 0 ] || chgrp coldchain "$cfg_tmp"
  mv "$cfg_tmp" "$cfg"
  say "installed $cfg (no devices yet)"
fi
# HTTPS: a local CA and the daemon's certificate, the key readable by the
# daemon's group only; a newly written config gets the paths.
if [ -n "$https_names" ]; then
  pki="$etc/pki"
  bash "$here/mint-device.sh" --init-pki "$pki" --https-name "$https_names"
  if [ "$real" -eq 1 ]; then
    chgrp coldchain "$pki" "$pki/https.key"
    chmod 0750 "$pki"
    chmod 0640 "$pki/https.key"
  fi
  if grep -q '^# tls_cert = ' "$cfg"; then
    sed -i -e "s|^# tls_cert = .*|tls_cert = \"/etc/coldchain/pki/https.pem\"|" \
      -e "s|^# tls_key = .*|tls_key = \"/etc/coldchain/pki/https.key\"|" "$cfg"
    say "HTTPS configured in $cfg (certificate for $https_names; trust $pki/ca.pem)"
  else
    say "certificate in $pki/https.pem: set http.tls_cert and http.tls_key in $cfg"
  fi
fi
if ! out=$("$bin" check-config --config "$cfg" 2>&1); then
  echo "$out" >&2
  die "$cfg does not pass check-config: fix it before starting the daemon"
fi

if [ "$real" -eq 1 ]; then
  if [ -d /run/systemd/system ]; then
    [ "$unit_changed" -eq 0 ] || systemctl daemon-reload
    if [ "$enable" -eq 1 ]; then
      systemctl enable coldchain.service
    fi
    if [ "$start" -eq 1 ]; then
      systemctl restart coldchain.service
      say "coldchain started: journalctl -u coldchain -f"
    elif systemctl is-active --quiet coldchain.service; then
      systemctl restart coldchain.service
      say "coldchain restarted on the new binary"
    else
      say "not started: systemctl start coldchain (after registering devices)"
    fi
    if ! systemctl is-active --quiet coldchain.service; then
      say "the first admin (daemon stopped, password typed at the prompt): sudo -u coldchain $prefix/bin/coldchain user add NAME --role admin --full-name 'Full Name' --config /etc/coldchain/coldchain.toml"
    fi
  else
    say "systemd is not running here: the unit is installed but not enabled"
  fi
fi
