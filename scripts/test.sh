#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs ruff, mypy and pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k kernel`).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Real parts, not mocks: the servers, the firewall and the peers we are measured against.
PKGS="apache2 nginx nftables conntrack iproute2 wrk apache2-utils hey chromium"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "== installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

echo "== installing tcpchurn with its test extras"
python3 -m pip install -q -e '.[test]'

echo "== ruff";  python3 -m ruff check .
echo "== mypy";  python3 -m mypy
echo "== pytest"; python3 -m pytest "$@"
