#!/usr/bin/env bash
# Installs pnpm (corepack cannot verify current pnpm releases here), the workspace dependencies,
# and builds every package.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(node -p "require('./package.json').packageManager.split('@')[1]")
if ! command -v pnpm >/dev/null || [ "$(pnpm -v)" != "$want" ]; then
  echo "== installing pnpm $want"
  npm install -g "pnpm@$want" --loglevel=error >/dev/null
fi
echo "== pnpm install"
pnpm install --frozen-lockfile --reporter=silent
echo "== build"
pnpm run -s build --output-logs=errors-only
