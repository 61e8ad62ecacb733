#!/usr/bin/env bash
# The PostgreSQL the tests start as a throwaway cluster (tests/postgres_cluster.py): Debian's
# `postgresql` (initdb, postgres; and the `postgres` user it runs as when the tests run as root).
set -euo pipefail
if command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
echo "installed $(ls /usr/lib/postgresql/*/bin/postgres)"
