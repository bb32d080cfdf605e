#!/usr/bin/env bash
# Start, stop or inspect the services mongo-cdc needs locally: MongoDB and RabbitMQ.
#
# Usage: bash scripts/local.sh start|stop|status|rabbitmq
#
# With a working Docker engine, `start` runs docker-compose.yaml (a 3-node MongoDB replica
# set plus RabbitMQ). Without one it runs natively:
#   - MongoDB: SecantusDB, a MongoDB stand-in installed in .venv, on 127.0.0.1:27017
#     (LOCAL_MONGO_PORT), data in .local/secantus-data, log in .local/secantus.log;
#   - RabbitMQ: whatever already answers at RABBITMQ_HOST:RABBITMQ_PORT (environment, then
#     .env, then 127.0.0.1:5672), else a local `rabbitmq-server` that this script starts.
# `start` is idempotent, `stop` stops only what `start` started, and `status` exits 0 only
# when MongoDB and RabbitMQ both answer.
#
# Also read: LOCAL_USE_DOCKER=0 forces the native path; LOCAL_START_TIMEOUT is how long to
# wait for a service to answer (seconds, default 60).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH=$PATH:/usr/sbin # rabbitmq-server and rabbitmqctl live there on Debian

STATE=.local
MONGO_PORT=${LOCAL_MONGO_PORT:-27017}
MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT/?replicaSet=secantus"
MONGO_DATA=$STATE/secantus-data
MONGO_LOG=$STATE/secantus.log
MONGO_PID=$STATE/secantus.pid
RABBIT_MARKER=$STATE/rabbitmq.started-by-us
DOCKER_MARKER=$STATE/docker.started-by-us
START_TIMEOUT=${LOCAL_START_TIMEOUT:-60}
STOP_TIMEOUT=15
PY=.venv/bin/python

COMPOSE=(docker compose -f docker-compose.yaml)
DOCKER_MONGO_URI="mongodb://localhost:30001,localhost:30002,localhost:30003/?replicaSet=my-replica-set"

say() { echo "local.sh: $*"; }
die() {
    echo "local.sh: $*" >&2
    exit 1
}

# ---- helpers -------------------------------------------------------------------------

# wait_until SECONDS COMMAND...: run COMMAND until it succeeds; fail after SECONDS.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# True when something accepts TCP connections at HOST PORT.
port_open() {
    # shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# True when process PID is gone. A zombie counts as gone: its parent (this script, long
# exited) cannot reap it, and on some machines PID 1 does not either.
gone() {
    local stat
    stat=$(ps -p "$1" -o stat= 2>/dev/null) || return 0
    [[ $stat == Z* ]]
}

# Value of NAME from the environment, else from .env, else DEFAULT (the app's precedence).
setting() {
    local name=$1 default=$2 value=""
    if [[ -n ${!name:-} ]]; then
        echo "${!name}"
        return
    fi
    if [[ -f .env ]]; then
        value=$(sed -n "s/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}$name=//p" .env | tail -n 1 | tr -d '\r')
        value=${value#[\"\']}
        value=${value%[\"\']}
    fi
    echo "${value:-$default}"
}

is_local_host() {
    [[ $1 == localhost || $1 == 127.* || $1 == ::1 || $1 == "$(hostname)" ]]
}

docker_usable() {
    [[ ${LOCAL_USE_DOCKER:-} != 0 ]] && command -v docker >/dev/null &&
        docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1
}

# ---- MongoDB (SecantusDB) --------------------------------------------------------------

# Prints the pid from $MONGO_PID if that process is alive and is SecantusDB (pids get reused).
secantus_pid() {
    local pid
    pid=$(cat "$MONGO_PID" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && ! gone "$pid" &&
        ps -p "$pid" -o command= | grep -q secantusd && echo "$pid"
}

# True when a writable MongoDB primary answers on 127.0.0.1:$MONGO_PORT.
mongo_ready() {
    port_open 127.0.0.1 "$MONGO_PORT" && "$PY" -c '
import sys, pymongo
client = pymongo.MongoClient("127.0.0.1", int(sys.argv[1]), directConnection=True,
                             serverSelectionTimeoutMS=1000)
sys.exit(0 if client.admin.command("hello").get("isWritablePrimary") else 1)
' "$MONGO_PORT" >/dev/null 2>&1
}

# Startup probe: ready, not yet, or give up at once if the process died.
secantus_ready() {
    secantus_pid >/dev/null || die "SecantusDB exited during startup; see $MONGO_LOG"
    mongo_ready
}

start_mongo() {
    local pid
    bash scripts/venv.sh
    if pid=$(secantus_pid); then
        wait_until "$START_TIMEOUT" secantus_ready ||
            die "SecantusDB (pid $pid) runs but does not answer on port $MONGO_PORT; see $MONGO_LOG, or run stop"
        say "MongoDB (SecantusDB) already running (pid $pid) on $MONGO_URI"
        return
    fi
    if port_open 127.0.0.1 "$MONGO_PORT"; then
        mongo_ready ||
            die "port $MONGO_PORT is taken by something that is not MongoDB; set LOCAL_MONGO_PORT to a free port"
        say "MongoDB already answers on 127.0.0.1:$MONGO_PORT (not started by this script); using it"
        return
    fi

    mkdir -p "$MONGO_DATA"
    # --noop-heartbeat-seconds: periodic oplog no-ops keep quiet change streams' resume
    # tokens fresh, as mongod does.
    nohup "$PWD/.venv/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" \
        --storage-path "$PWD/$MONGO_DATA" --noop-heartbeat-seconds 10 \
        </dev/null >>"$MONGO_LOG" 2>&1 &
    echo $! >"$MONGO_PID"
    if ! wait_until "$START_TIMEOUT" secantus_ready; then
        stop_mongo >/dev/null
        die "SecantusDB did not answer on port $MONGO_PORT within ${START_TIMEOUT}s; see $MONGO_LOG"
    fi
    say "started MongoDB (SecantusDB, pid $(cat "$MONGO_PID")) on $MONGO_URI, data in $MONGO_DATA, log in $MONGO_LOG"
}

stop_mongo() {
    local pid
    if ! pid=$(secantus_pid); then
        rm -f "$MONGO_PID"
        say "MongoDB (SecantusDB): not running"
        return
    fi
    kill -TERM "$pid"
    if ! wait_until "$STOP_TIMEOUT" gone "$pid"; then
        say "SecantusDB (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 gone "$pid" || die "could not stop SecantusDB (pid $pid)"
    fi
    rm -f "$MONGO_PID"
    say "stopped MongoDB (SecantusDB, pid $pid); data kept in $MONGO_DATA"
}

status_mongo() {
    local pid
    if pid=$(secantus_pid); then
        mongo_ready && say "MongoDB (SecantusDB): running, pid $pid, $MONGO_URI" && return
        say "MongoDB (SecantusDB): pid $pid is alive but does not answer on port $MONGO_PORT; see $MONGO_LOG"
    elif mongo_ready; then
        say "MongoDB: answers on 127.0.0.1:$MONGO_PORT (not started by this script)"
        return
    elif port_open 127.0.0.1 "$MONGO_PORT"; then
        say "MongoDB: port $MONGO_PORT is taken by something that is not MongoDB"
    else
        say "MongoDB: not running (port $MONGO_PORT)"
    fi
    return 1
}

# ---- RabbitMQ ------------------------------------------------------------------------

RABBIT_HOST=$(setting RABBITMQ_HOST 127.0.0.1)
RABBIT_PORT=$(setting RABBITMQ_PORT 5672)
RABBIT_ADDR=$RABBIT_HOST:$RABBIT_PORT

rabbit_up() { port_open "$RABBIT_HOST" "$RABBIT_PORT"; }

start_rabbit() {
    if rabbit_up; then
        if [[ -f $RABBIT_MARKER ]]; then
            say "RabbitMQ already running on $RABBIT_ADDR (started by this script)"
        else
            say "RabbitMQ already answers on $RABBIT_ADDR; using it (not started by this script, stop leaves it running)"
        fi
        return
    fi
    rm -f "$RABBIT_MARKER" # stale: whatever we started is gone
    is_local_host "$RABBIT_HOST" ||
        die "nothing answers at RabbitMQ $RABBIT_ADDR (RABBITMQ_HOST/RABBITMQ_PORT); start it there or point them at a local broker"
    command -v rabbitmq-server >/dev/null ||
        die "RabbitMQ is not running and rabbitmq-server is not installed; install it (Debian/Ubuntu: apt-get install rabbitmq-server) or use Docker"

    RABBITMQ_NODE_PORT=$RABBIT_PORT rabbitmq-server -detached
    touch "$RABBIT_MARKER"
    wait_until "$START_TIMEOUT" rabbit_up ||
        die "RabbitMQ did not answer on $RABBIT_ADDR within ${START_TIMEOUT}s; see /var/log/rabbitmq/"
    say "started RabbitMQ on $RABBIT_ADDR (guest/guest)"
}

# The consistent-hash exchange feeds partitioned sinks (RABBITMQ_PARTITIONS); it ships with
# RabbitMQ as a plugin. Enabled once, where rabbitmq-plugins can reach the local node.
enable_hash_exchange() {
    command -v rabbitmq-plugins >/dev/null || return 0
    is_local_host "$RABBIT_HOST" || return 0
    rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_consistent_hash_exchange && return 0
    rabbitmq-plugins enable rabbitmq_consistent_hash_exchange >/dev/null ||
        die "cannot enable rabbitmq_consistent_hash_exchange (run: rabbitmq-plugins enable rabbitmq_consistent_hash_exchange)"
    say "enabled the RabbitMQ plugin rabbitmq_consistent_hash_exchange"
}

stop_rabbit() {
    if [[ ! -f $RABBIT_MARKER ]]; then
        say "RabbitMQ on $RABBIT_ADDR: not started by this script; left alone"
        return
    fi
    rabbitmqctl stop >/dev/null || die "rabbitmqctl stop failed; RabbitMQ may still be running"
    rm -f "$RABBIT_MARKER"
    say "stopped RabbitMQ on $RABBIT_ADDR"
}

status_rabbit() {
    if ! rabbit_up; then
        say "RabbitMQ: not running ($RABBIT_ADDR)"
        return 1
    fi
    local owner="not started by this script"
    [[ -f $RABBIT_MARKER ]] && owner="started by this script"
    say "RabbitMQ: answers on $RABBIT_ADDR ($owner)"
}

# ---- Docker --------------------------------------------------------------------------

start_docker() {
    "${COMPOSE[@]}" up -d --wait
    touch "$DOCKER_MARKER"
    say "started with Docker (docker-compose.yaml):"
    say "  MongoDB replica set: $DOCKER_MONGO_URI"
    say "  RabbitMQ: 127.0.0.1:5672 (guest/guest), management UI http://localhost:15672"
    say "  for the bridge: export MONGO_DATABASE_HOST='$DOCKER_MONGO_URI'"
}

stop_docker() {
    "${COMPOSE[@]}" down # keeps the named data volumes; add -v to drop them
    rm -f "$DOCKER_MARKER"
    say "stopped the Docker services (data volumes kept)"
}

# ---- subcommands ---------------------------------------------------------------------

cmd_start() {
    mkdir -p "$STATE"
    if [[ -f $DOCKER_MARKER ]] || docker_usable; then
        start_docker
        return
    fi
    start_mongo
    start_rabbit
    enable_hash_exchange
}

cmd_stop() {
    if [[ -f $DOCKER_MARKER ]]; then
        docker_usable || die "Docker services were started but the Docker engine does not answer now"
        stop_docker
        return
    fi
    stop_mongo
    stop_rabbit
}

cmd_status() {
    if [[ -f $DOCKER_MARKER ]]; then
        "${COMPOSE[@]}" ps
        return
    fi
    local ok=0
    status_mongo || ok=3
    status_rabbit || ok=3
    return "$ok"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
rabbitmq) start_rabbit && enable_hash_exchange ;; # RabbitMQ only (what `make test` needs besides .venv)
*) die "usage: bash scripts/local.sh start|stop|status|rabbitmq" ;;
esac
