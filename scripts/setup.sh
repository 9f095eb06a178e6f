#!/usr/bin/env bash
# Installs everything dynamic-volumes needs on a fresh Debian machine, as root: the FUSE clients,
# runc and busybox for the local demo and the end-to-end tests, and the npm dependencies, which
# include the pinned Node 24 that every npm script runs on.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in fuse3 s3fs rclone runc busybox-static util-linux procps ca-certificates curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages (${need[*]}); run as root or install them first" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# The FUSE clients mount with allow_other so that the containers' users can read the buckets.
if [ -w /etc/fuse.conf ] && ! grep -qE '^\s*user_allow_other' /etc/fuse.conf; then
  echo user_allow_other >> /etc/fuse.conf
fi

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
# dvctl (and its kubectl plugin name, kubectl-dv) runs from the compiled dist/dvctl/main.js, the
# package's bin. Built only when a source is newer than it, so that a second set-up is quick.
if [ ! -f dist/dvctl/main.js ] || [ -n "$(find dvctl shared tsconfig.json tsconfig.build.json package-lock.json -newer dist/dvctl/main.js -print -quit)" ]; then
  echo "setup: npm run build (dvctl)"
  npm run --silent build
fi
chmod +x dist/dvctl/main.js
echo "setup: dvctl is dist/dvctl/main.js; put it on the PATH with npm link (dvctl and kubectl-dv)"
echo "setup: done (node $(node_modules/.bin/node --version), $(s3fs --version 2>&1 | head -1), $(rclone --version 2>&1 | head -1))"
