#!/usr/bin/env bash
# Runs every check and test of Coldchain: the README's second command, and what CI runs.
# Installs what the tests need when it is missing (Debian: mosquitto, its clients,
# chromium, openssl, nodejs, npm, qpdf, poppler-utils, postgresql; npm:
# playwright-core into tests/web),
# then: format check, clippy with -D warnings, the firmware's no_std link check,
# and cargo test --workspace --locked.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# The dashboard tests (tests/tests/dashboard.rs, people.rs) drive Debian's
# chromium with playwright-core from npm; no browser is downloaded. people.rs
# and deploy.rs make certificates with openssl (deploy/mint-device.sh).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The PostgreSQL store's tests (tests/tests/pg_store.rs, centre_pg.rs) start
# their own throwaway cluster with Debian's binaries (tests/src/postgres.rs);
# the cluster Debian starts on :5432 after installing is not used.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# The PDF/A report's tests (daemon/tests/report_arrival.rs, tests/tests/report.rs)
# check it with qpdf --check and render it with poppler's pdftoppm and pdftotext.
command -v qpdf >/dev/null 2>&1 || missing+=(qpdf)
command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts a system-wide mosquitto on :1883 after installing it; the tests
# start their own brokers on free ports and do not need it.
if [ ! -d tests/web/node_modules/playwright-core ]; then
  echo "==> npm ci (tests/web: playwright-core)"
  (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test --workspace --locked"
# cargo builds the daemon's and the simulator's binaries before running any
# test (both packages have integration tests); the end-to-end tests use them.
COLDCHAIN_BINS_BUILT=1 cargo test --workspace --locked
