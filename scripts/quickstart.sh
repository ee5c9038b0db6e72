#!/usr/bin/env bash
# First command of the README: install everything, then run the quickstart on the embedded
# default (file blockers under the user's data directory, no daemons).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== quickstart"
exec node scripts/quickstart.mjs "$@"
