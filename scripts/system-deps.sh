#!/usr/bin/env bash
# The system programs the test suite drives for real (never mocked): Debian's Chromium and its
# WebDriver for the dashboard's browser test, and PostgreSQL's initdb/pg_ctl for the PostgreSQL
# store's tests (found on PATH or in /usr/lib/postgresql/N/bin: tests/store/postgres_server.py).
# Installed from the Debian registry only when missing; `make test` runs this first, so a fresh
# machine needs no other step.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    echo "make test needs ${missing[*]} (Debian packages); install them as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} from the Debian registry" >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
