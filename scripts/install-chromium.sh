#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test of the report page
# (tests/report_page.rs), which runs it headless. A no-op when a Chromium
# (chromium, chromium-browser or google-chrome) is already on PATH; else
# `apt-get install chromium`, with sudo when not root. About a minute or
# two the first time (apt-get update included).
#
#   scripts/install-chromium.sh          # install when missing
#   scripts/install-chromium.sh --path   # also print the browser's path
set -euo pipefail

find_browser() {
  local b
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
      command -v "$b"
      return 0
    fi
  done
  return 1
}

print_path=0
[ "${1:-}" = "--path" ] && print_path=1

if ! browser=$(find_browser); then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-chromium.sh: not root and no sudo: install Debian's chromium package by hand" >&2
    exit 1
  fi
  echo "install-chromium.sh: installing Debian's chromium package" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Several test binaries may ask at once: one apt-get at a time.
  lock="${TMPDIR:-/tmp}/nudgeflow-install-chromium.lock"
  (
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if ! find_browser >/dev/null; then
      "${sudo[@]}" apt-get update -q >&2
      "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium >&2
    fi
  ) 9>"$lock"
  browser=$(find_browser) || { echo "install-chromium.sh: chromium still not on PATH" >&2; exit 1; }
fi

if [ "$print_path" -eq 1 ]; then
  echo "$browser"
fi
