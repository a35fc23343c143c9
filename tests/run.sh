#!/usr/bin/env bash
# Run every test of wsgi-bridge on this machine, installing what they need.
#
#   bash tests/run.sh [pytest args...]
#
# Installs the system packages the integration tests start for real (nginx,
# Apache with mod_fcgid, php-fpm, spawn-fcgi, cgi-fcgi, wrk, curl...) when they
# are missing, builds a virtual environment with Debian's /usr/bin/python3
# (not a pyenv shim: Apache's www-data must be able to run it, and it is the
# interpreter the benchmarks name), installs bridge with its test extras and
# runs pytest.  Set BRIDGE_TEST_VENV to reuse another virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(nginx apache2 libapache2-mod-fcgid spawn-fcgi libfcgi-bin libfcgi-dev wrk hyperfine
          php-fpm python3-venv python3-dev curl openssl perl procps gcc haproxy)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
VENV=${BRIDGE_TEST_VENV:-.venv-test}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true

exec "$VENV/bin/python" -m pytest -q "$@"
