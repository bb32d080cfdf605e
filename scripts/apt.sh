#!/usr/bin/env bash
# Install the Debian packages the tests need, when their command is missing.
#
# Usage: bash scripts/apt.sh COMMAND=PACKAGE ...   (e.g. stunnel4=stunnel4)
# Idempotent and quiet when everything is there; `apt-get update` runs at most once, and
# only when something must be installed. Needs root (or sudo) for apt-get.
set -euo pipefail

missing=()
for pair in "$@"; do
    cmd=${pair%%=*}
    pkg=${pair#*=}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "apt.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
echo "apt.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
