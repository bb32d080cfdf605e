#!/usr/bin/env bash
# Create or refresh the project venv (.venv/) from requirements-dev.txt.
#
# Usage: bash scripts/venv.sh
# Idempotent and silent when .venv is already up to date: the hash of
# requirements-dev.txt (and the Python version) is kept in .venv/.requirements.sha256,
# and pip runs only when that stamp is missing or stale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQS=requirements-dev.txt
VENV=.venv
STAMP=$VENV/.requirements.sha256
LOG=.local/venv.log

fail() {
    echo "venv.sh: $*" >&2
    exit 1
}

wanted_stamp() {
    { sha256sum "$REQS"; python3 --version; } | sha256sum | cut -d' ' -f1
}

command -v python3 >/dev/null || fail "python3 not found; install Python 3.11+"
mkdir -p .local
# Serialise concurrent callers (e.g. parallel test binaries) so pip never runs twice at once.
# (flock is util-linux; without it, e.g. on macOS, callers are simply not serialised.)
exec 9>.local/venv.lock
if command -v flock >/dev/null; then flock 9; fi

want=$(wanted_stamp)
if [[ -x $VENV/bin/python && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
    exit 0
fi

echo "venv.sh: installing $REQS into $VENV (log: $LOG)" >&2
rm -f "$STAMP"
: >"$LOG"
# A venv that no longer runs (e.g. Python was upgraded under it) is rebuilt from scratch.
if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >>"$LOG" 2>&1 ||
        { rm -rf "$VENV"; fail "python3 -m venv failed (on Debian: apt-get install python3-venv); see $LOG"; }
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" >>"$LOG" 2>&1 ||
    fail "pip could not install $REQS: $(grep '^ERROR' "$LOG" | tail -n 1) (full log: $LOG)"
echo "$want" >"$STAMP"
