#!/usr/bin/env bash
# Find (or install) a headless Chromium for the report-page browser check and print its path.
#
#   eval "$(bash .ci/chromium.sh)"        # exports EABENCH_CHROMIUM=/usr/bin/chromium
#
# Installs Debian's `chromium` package when no Chromium binary exists (as root only, with apt-get,
# the way .ci/postgres.sh installs PostgreSQL). Nothing is downloaded by the browser itself.
# stdout carries only `export NAME=value` lines (the caller evals them); everything else goes to
# stderr. Exit status 1 when no browser is available: the browser-marked tests then skip.
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

find_chromium() {
  local c
  if [ -n "${EABENCH_CHROMIUM:-}" ] && [ -x "${EABENCH_CHROMIUM}" ]; then echo "$EABENCH_CHROMIUM"; return 0; fi
  for c in chromium chromium-browser google-chrome-stable google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

if ! bin=$(find_chromium); then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no Chromium and cannot install it (needs root and apt-get): install Debian's 'chromium' package"
    exit 1
  fi
  log "installing Debian's chromium package"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update && apt-get install -y --no-install-recommends chromium; } >&2 \
    || { log "apt-get could not install chromium"; exit 1; }
  bin=$(find_chromium) || { log "chromium installed but not on PATH"; exit 1; }
fi
log "using $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
echo "export EABENCH_CHROMIUM=$bin"
