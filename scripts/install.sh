#!/usr/bin/env bash
# Installs pnpm (corepack cannot verify current pnpm releases here), the workspace dependencies,
# and builds every package. Both README commands run it, in either order, any number of times:
# the build checks each native addon against what it is built from (its sources, the librados
# headers for RADOS) on every run and rebuilds what is missing or stale, whatever pnpm's install
# scripts and turbo's cache did (turbo.json, scripts/lib/native-addon.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(node -p "require('./package.json').packageManager.split('@')[1]")
if ! command -v pnpm >/dev/null || [ "$(pnpm -v)" != "$want" ]; then
  echo "== installing pnpm $want"
  npm install -g "pnpm@$want" --loglevel=error >/dev/null
fi
# The account the daemons switch to ([ARCHIPELAGO] USER and GROUP, "archipelago" by default), made
# when run as root and missing, as the original's Debian package did (adduser --system --group).
if [ "$(id -u)" -eq 0 ]; then
  if ! getent group archipelago >/dev/null; then
    echo "== creating the system group archipelago"
    groupadd --system archipelago
  fi
  if ! getent passwd archipelago >/dev/null; then
    echo "== creating the system user archipelago"
    useradd --system --gid archipelago --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "Archipelago daemons" archipelago
  fi
fi
echo "== pnpm install"
pnpm install --frozen-lockfile --reporter=silent
echo "== build"
pnpm run -s build --output-logs=errors-only
if [ ! -f packages/blocker-rados/build/Release/archip_rados.node ]; then
  echo "== note: RADOS support is not built (no librados headers); once librados-dev is installed,"
  echo "   either README command builds it"
fi
