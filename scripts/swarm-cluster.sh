#!/usr/bin/env bash
# A real three-node Docker Swarm on this machine, for the tests (issue 14): three Debian dockerd
# 20.10, each in a network namespace of its own (mpsw1..3 at 10.213.0.11..13, veth pairs into the
# bridge mpsw0, 10.213.0.1/24 on the host side), with its own data-root, exec-root (so its own
# containerd, shims and netns files), pidfile, socket, config file and hostname (unshare --uts);
# node1 is the manager, node2 and node3 workers. Debian's docker-registry (distribution 2.8, a
# plain process) serves images at 10.213.0.1:5000 over plain HTTP: the host engine pushes there,
# every node pulls from there. Nodes reach the registry and each other, not the internet.
#
# The kernel has no IPVS: services need `endpoint_mode: dnsrr` and host-mode published ports
# (no VIPs, no ingress routing mesh). The dispatcher heartbeat is 2 s, so a lost node shows Down
# within seconds.
#
#   scripts/swarm-cluster.sh up                 bring up what is missing (idempotent; ~1 s when up)
#   scripts/swarm-cluster.sh down               remove everything it made (engines, shims, mounts,
#                                               netns, veths, bridge, iptables rules, registry, data)
#   scripts/swarm-cluster.sh status             report; exits non-zero unless fully up
#   scripts/swarm-cluster.sh env                the variables tests and tools use (NAME=value lines)
#   scripts/swarm-cluster.sh stop-node NODE [--kill]   stop one engine (--kill: power-off, at once)
#   scripts/swarm-cluster.sh start-node NODE    start it again; waits until the manager sees it Ready
#   scripts/swarm-cluster.sh docker NODE ARGS   Debian's docker CLI against NODE's engine
#   scripts/swarm-cluster.sh nsenter NODE CMD   run CMD in NODE's network namespace
#   scripts/swarm-cluster.sh host-registry      let the host engine push to the registry
#                                               (/etc/docker/daemon.json, reloaded with SIGHUP)
#
# `down` leaves the registry in the host's /etc/docker/daemon.json (harmless; test-env.sh sets it).
# Tests: the `swarm_cluster` fixture (tests/fixtures_swarm.py). Tools: `eval "$(... env)"` or
# `export $(... env)`; Python: docker.DockerClient(base_url=MODELPORT_SWARM_MANAGER).
set -euo pipefail

readonly DOCKER=/usr/bin/docker   # Debian's 20.10 client; /usr/local/bin/docker (28.x) may come first on PATH
readonly DOCKERD=/usr/sbin/dockerd
readonly PACKAGES=(docker.io docker-registry iproute2 iptables curl)
# MODELPORT_SWARM_INSTANCE=N (1-9) makes a second, separate cluster with names of its own (bridge
# mpswNx0, namespaces mpswNx1..3, 10.213.N.0/24, /run/modelport-swarm-N, ...): to try changes to this
# script without disturbing the shared one (instance 0, the names above).
readonly INSTANCE=${MODELPORT_SWARM_INSTANCE:-0}
[[ $INSTANCE =~ ^[0-9]$ ]] || { echo "swarm-cluster: MODELPORT_SWARM_INSTANCE must be 0-9" >&2; exit 2; }
if [ "$INSTANCE" = 0 ]; then NAME=mpsw SUFFIX=""; else NAME=mpsw${INSTANCE}x SUFFIX=-$INSTANCE; fi
readonly NAME SUFFIX
readonly BRIDGE=${NAME}0
readonly SUBNET_PREFIX=10.213.$INSTANCE
readonly HOST_ADDR=$SUBNET_PREFIX.1
readonly REGISTRY=$HOST_ADDR:5000
readonly NODES=(node1 node2 node3)
readonly MANAGER=node1
readonly RUN_DIR=/run/modelport-swarm$SUFFIX
readonly LIB_DIR=/var/lib/modelport-swarm$SUFFIX
readonly LOG_DIR=/var/log/modelport-swarm$SUFFIX
readonly HOST_DAEMON_JSON=/etc/docker/daemon.json
readonly RULE_COMMENT=modelport-swarm$SUFFIX
# Overlay subnets from a pool of their own, apart from the bridge's 10.213.0.0/24.
readonly ADDR_POOL=10.214.0.0/16

now() { date +%s%N; }
since() { local ms=$((($(now) - $1) / 1000000)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }
T0=$(now)
readonly T0
say() { printf '[swarm %7s] %s\n' "$(since "$T0")" "$*"; }
die() { printf 'swarm-cluster: error: %s\n' "$*" >&2; exit 1; }

# Runs a simple command with its output in a log file; shows the log's tail if it fails.
logged() {
    local log=$LOG_DIR/$1.log
    shift
    "$@" >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "'$*' failed; full log: $log"; }
}

# Per-node names: nodeN -> namespace mpswN, address 10.213.0.1N, host-side veth vmpswN.
node_index() { [[ $1 =~ ^node([1-3])$ ]] || die "unknown node '$1' (one of: ${NODES[*]})"; echo "${BASH_REMATCH[1]}"; }
netns() { echo "$NAME$(node_index "$1")"; }
node_addr() { echo "$SUBNET_PREFIX.1$(node_index "$1")"; }
host_veth() { echo "v$NAME$(node_index "$1")"; }
node_dir() { echo "$RUN_DIR/$1"; }
socket() { echo "$RUN_DIR/$1/docker.sock"; }
exec_root() { echo "$RUN_DIR/$1/exec"; }
containerd_socket() { echo "$(exec_root "$1")/containerd/containerd.sock"; }
data_root() { echo "$LIB_DIR/$1"; }
cgroup_parent() { echo "/modelport-swarm$SUFFIX-$1"; }
node_docker() { local node=$1; shift; "$DOCKER" -H "unix://$(socket "$node")" "$@"; }

# ---------------------------------------------------------------------------------------------
# Processes: found by their pidfile or their exact paths, ended by pid.

# A zombie counts as gone: PID 1 here may be slow to reap what it inherits (a killed shim's container).
pid_alive() {
    local state
    state=$(awk '$1 == "State:" { print $2 }' "/proc/$1/status" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}
alive() { local pid; while read -r pid; do if [ -n "$pid" ] && pid_alive "$pid"; then echo "$pid"; fi; done; }
dockerd_pid() {
    local pid
    pid=$(cat "$(node_dir "$1")/dockerd.pid" 2>/dev/null) || return 1
    # The pid must still be that engine (pids are reused): its command line names its socket.
    [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "unix://$(socket "$1")"
    echo "$pid"
}
# pids whose command line holds the arguments "$1" and "$2" (e.g. -address SOCK, --config FILE).
pids_with_args() {
    local file pid
    # One grep over every command line (NUL-separated arguments, -z), then the few that match.
    grep -lzxF -- "$2" /proc/[0-9]*/cmdline 2>/dev/null | while read -r file; do
        pid=${file#/proc/}
        pid=${pid%/cmdline}
        if grep -qzxF -- "$1" "$file" 2>/dev/null && [ "$pid" != "$$" ]; then echo "$pid"; fi
    done || true  # none found (grep's status 1) is an answer too
}
# The node's containerd (dockerd starts it with --config EXEC_ROOT/containerd/containerd.toml) and shims.
containerd_pids() { pids_with_args --config "$(exec_root "$1")/containerd/containerd.toml"; }
shim_pids() { pids_with_args -address "$(containerd_socket "$1")"; }
# Every process in the node's network namespace: dockerd, containerd, shims, runc, docker-proxy.
netns_pids() {
    local ino
    ino=$(stat -L -c %i "/run/netns/$(netns "$1")" 2>/dev/null) || return 0
    # find fails on what it may not read (PID 1's namespace here): what it found is still the answer.
    find /proc/[0-9]*/ns/net -maxdepth 0 -lname "net:\[$ino\]" 2>/dev/null | cut -d/ -f3 || true
}
# The processes of the node's containers: their cgroups are under the node's cgroup parent.
container_pids() { cat /sys/fs/cgroup/pids"$(cgroup_parent "$1")"/*/cgroup.procs 2>/dev/null || true; }

# kill_wait SIGNAL SECONDS PID...: signals the pids and waits until they are gone.
kill_wait() {
    local sig=$1 secs=$2 pid
    shift 2
    [ $# -gt 0 ] || return 0
    kill "-$sig" "$@" 2>/dev/null || true
    local deadline=$((SECONDS + secs))
    for pid in "$@"; do
        while pid_alive "$pid"; do
            [ "$SECONDS" -lt "$deadline" ] || return 1
            sleep 0.1
        done
    done
}

# ---------------------------------------------------------------------------------------------
# Packages, the network, the registry.

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || echo "$pkg"
    done
}

install_packages() {
    local missing start
    mapfile -t missing < <(missing_packages)
    [ ${#missing[@]} -gt 0 ] || return 0
    start=$(now)
    say "installing ${missing[*]} ..."
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}")
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        logged apt-get-update apt-get update
    fi
    if ! "${install[@]}" >"$LOG_DIR/apt-get-install.log" 2>&1; then
        logged apt-get-update apt-get update
        logged apt-get-install "${install[@]}"
    fi
    say "installed ${missing[*]} in $(since "$start")"
}

iptables_rule() { iptables -w "$1" FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$RULE_COMMENT" -j ACCEPT; }

network_up() {
    local node ns veth
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$HOST_ADDR/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    # The host engine's FORWARD policy is DROP and bridged frames pass through iptables
    # (br_netfilter): let the nodes' traffic (swarm 2377, gossip 7946, VXLAN 4789) cross the bridge.
    iptables_rule -C 2>/dev/null || iptables_rule -I
    for node in "${NODES[@]}"; do
        ns=$(netns "$node")
        veth=$(host_veth "$node")
        [ -e "/run/netns/$ns" ] || ip netns add "$ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip link add "$veth" type veth peer name eth0 netns "$ns"
            ip -n "$ns" addr add "$(node_addr "$node")/24" dev eth0
        fi
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route replace default via "$HOST_ADDR"
    done
}

network_down() {
    local node ns veth
    for node in "${NODES[@]}"; do
        ns=$(netns "$node")
        veth=$(host_veth "$node")
        if ip link show "$veth" >/dev/null 2>&1; then ip link del "$veth"; fi
        if [ -e "/run/netns/$ns" ]; then ip netns del "$ns"; fi
    done
    while iptables_rule -C 2>/dev/null; do iptables_rule -D; done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
}

registry_pid() {
    local pid
    pid=$(cat "$RUN_DIR/registry.pid" 2>/dev/null) || return 1
    pid_alive "$pid" && grep -qF "$RUN_DIR/registry.yml" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}
registry_ready() { curl -fsS -m 2 -o /dev/null "http://$REGISTRY/v2/"; }

registry_up() {
    if registry_pid >/dev/null && registry_ready; then return; fi
    local start pid
    start=$(now)
    local port=${REGISTRY##*:} taken
    taken=$(ss -Htlnp "( sport = :$port )" | awk -v r="$REGISTRY" -v p="$port" \
        '$4 == r || $4 == "0.0.0.0:" p || $4 == "*:" p || $4 == "[::]:" p')
    if [ -n "$taken" ]; then
        echo "$taken" >&2
        die "$REGISTRY is taken by another process (Debian's docker-registry service? it is not used here)"
    fi
    mkdir -p "$LIB_DIR/registry"
    cat >"$RUN_DIR/registry.yml" <<EOF
version: 0.1
log: {level: info, fields: {service: registry}}
storage:
  filesystem: {rootdirectory: $LIB_DIR/registry}
  delete: {enabled: true}
http:
  addr: $REGISTRY
EOF
    setsid nohup /usr/bin/docker-registry serve "$RUN_DIR/registry.yml" >>"$LOG_DIR/registry.log" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$RUN_DIR/registry.pid"
    local deadline=$((SECONDS + 15))
    until registry_ready 2>/dev/null; do
        pid_alive "$pid" || { tail -n 20 "$LOG_DIR/registry.log" >&2; die "the registry exited; see $LOG_DIR/registry.log"; }
        [ "$SECONDS" -lt "$deadline" ] || die "the registry did not answer within 15 s; see $LOG_DIR/registry.log"
        sleep 0.1
    done
    say "registry at $REGISTRY in $(since "$start") (storage $LIB_DIR/registry, log $LOG_DIR/registry.log)"
}

# ---------------------------------------------------------------------------------------------
# The host engine: it builds the images and pushes them to the registry.

host_registry_insecure() {
    [ "$(timeout 10 "$DOCKER" info --format "{{with index .RegistryConfig.IndexConfigs \"$REGISTRY\"}}{{.Secure}}{{end}}" 2>/dev/null)" = false ]
}

# Adds the registry to insecure-registries in /etc/docker/daemon.json, keeping every other
# setting there; a running host dockerd reloads it on SIGHUP (a reloadable option in 20.10).
host_registry() {
    mkdir -p "$(dirname "$HOST_DAEMON_JSON")"
    python3 - "$HOST_DAEMON_JSON" "$REGISTRY" <<'EOF'
import json, os, sys
path, registry = sys.argv[1:]
config = {}
if os.path.exists(path) and os.path.getsize(path):
    with open(path) as f:
        config = json.load(f)
registries = config.setdefault("insecure-registries", [])
if registry not in registries:
    registries.append(registry)
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
EOF
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || return 0   # not running: it reads the file when it starts
    pid_alive "$pid" || return 0
    host_registry_insecure && return
    kill -HUP "$pid"
    local deadline=$((SECONDS + 10))
    until host_registry_insecure; do
        [ "$SECONDS" -lt "$deadline" ] || die "the host dockerd did not take $REGISTRY as an insecure registry after SIGHUP ($HOST_DAEMON_JSON)"
        sleep 0.1
    done
    say "host engine reloaded $HOST_DAEMON_JSON: may push to $REGISTRY"
}

# ---------------------------------------------------------------------------------------------
# The engines.

engine_ready() { timeout 5 "$DOCKER" -H "unix://$(socket "$1")" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
    local node=$1 dir pid start
    dir=$(node_dir "$node")
    engine_ready "$node" && return
    start=$(now)
    if pid=$(dockerd_pid "$node"); then
        : # starting up: wait below
    else
        # A killed engine leaves its containerd and shims: end them before another one starts.
        kill_node_processes "$node"
        mkdir -p "$dir" "$(data_root "$node")"
        # Its own config file: the host's /etc/docker/daemon.json is not for the nodes, and a
        # setting both there and as a flag would stop dockerd.
        cat >"$dir/daemon.json" <<EOF
{
  "insecure-registries": ["$REGISTRY"],
  "storage-driver": "$(storage_driver)",
  "cgroup-parent": "$(cgroup_parent "$node")",
  "shutdown-timeout": 5,
  "deprecated-key-path": "$(data_root "$node")/key.json",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF
        rm -f "$dir/dockerd.pid" "$(socket "$node")"
        # nsenter --net, not `ip netns exec` (that remounts /sys and dockerd then finds no
        # devices cgroup); unshare --uts for the node's hostname (its name in the swarm). Own
        # session, all streams redirected, the lock (fd 9) closed: it outlives this script.
        setsid nohup nsenter --net="/run/netns/$(netns "$node")" unshare --uts -- sh -c '
            hostname "$0" && exec "$@"' "$node" \
            "$DOCKERD" --config-file "$dir/daemon.json" --data-root "$(data_root "$node")" \
            --exec-root "$(exec_root "$node")" --pidfile "$dir/dockerd.pid" -H "unix://$(socket "$node")" \
            >>"$LOG_DIR/$node-dockerd.log" 2>&1 </dev/null 9>&- &
        pid=$!
    fi
    local deadline=$((SECONDS + 30))
    until engine_ready "$node"; do
        pid_alive "$pid" || { tail -n 20 "$LOG_DIR/$node-dockerd.log" >&2; die "$node's dockerd exited; see $LOG_DIR/$node-dockerd.log"; }
        [ "$SECONDS" -lt "$deadline" ] || die "$node's dockerd did not answer within 30 s; see $LOG_DIR/$node-dockerd.log"
        sleep 0.1
    done
    say "$node: engine up in $(since "$start") ($(socket "$node"), log $LOG_DIR/$node-dockerd.log)"
}

# overlay2 when the data-root's filesystem takes it (ext4, xfs), else vfs (works everywhere, slow).
storage_driver() {
    case "$(stat -f -c %T "$LIB_DIR" 2>/dev/null)" in
        ext2/ext3 | xfs | btrfs) echo overlay2 ;;
        *) echo vfs ;;
    esac
}

# Ends whatever is left of a node's engine: dockerd, its containerd, the shims and the
# processes in its containers.
kill_node_processes() {
    local node=$1 pids round
    for round in 1 2 3 4 5 6; do
        # The engine first: its containerd then starts no more shims, and the shims' runc children
        # (which can still start a container) are in the node's namespace with them.
        mapfile -t pids < <({ dockerd_pid "$node" || true; containerd_pids "$node"; netns_pids "$node"
            shim_pids "$node"; container_pids "$node"; } | sort -u | alive)
        [ ${#pids[@]} -gt 0 ] || return 0
        kill_wait KILL 10 "${pids[@]}" || die "$node: processes ${pids[*]} did not end"
    done
    die "$node: processes keep appearing in its namespace and cgroups: ${pids[*]}"
}

# stop_engine NODE [--kill]: a clean stop (dockerd stops its containers, then exits), or --kill:
# every process of the node at once, like a power failure.
stop_engine() {
    local node=$1 mode=${2:-} pid start
    start=$(now)
    if [ "$mode" != --kill ] && pid=$(dockerd_pid "$node"); then
        kill_wait TERM 30 "$pid" || say "$node: dockerd still running 30 s after SIGTERM: killing it"
    fi
    kill_node_processes "$node"
    rm -f "$(socket "$node")" "$(node_dir "$node")/dockerd.pid"
    say "$node: engine stopped${mode:+ ($mode)} in $(since "$start")"
}

swarm_state() { node_docker "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }

swarm_up() {
    local node token start
    start=$(now)
    if [ "$(swarm_state "$MANAGER")" != active ]; then
        logged "$MANAGER-swarm-init" node_docker "$MANAGER" swarm init --advertise-addr "$(node_addr "$MANAGER")" \
            --listen-addr "$(node_addr "$MANAGER"):2377" --dispatcher-heartbeat 2s \
            --default-addr-pool "$ADDR_POOL" --default-addr-pool-mask-length 24
        say "$MANAGER: swarm initialised (manager at $(node_addr "$MANAGER"):2377)"
    fi
    token=$(node_docker "$MANAGER" swarm join-token -q worker)
    for node in "${NODES[@]}"; do
        [ "$node" != "$MANAGER" ] || continue
        [ "$(swarm_state "$node")" != active ] || continue
        logged "$node-swarm-join" node_docker "$node" swarm join --token "$token" \
            --advertise-addr "$(node_addr "$node")" --listen-addr "$(node_addr "$node"):2377" \
            "$(node_addr "$MANAGER"):2377"
        say "$node: joined the swarm as a worker"
    done
    wait_nodes_ready 30
    say "swarm: ${#NODES[@]} nodes Ready in $(since "$start")"
}

# Status of each node as the manager sees it: "HOSTNAME STATUS ROLE" lines.
node_list() { node_docker "$MANAGER" node ls --format '{{.Hostname}} {{.Status}} {{if .ManagerStatus}}manager{{else}}worker{{end}}' 2>/dev/null; }
ready_count() { node_list | awk '$2 == "Ready"' | wc -l; }

wait_nodes_ready() {
    local deadline=$((SECONDS + $1))
    until [ "$(ready_count)" -eq ${#NODES[@]} ]; do
        [ "$SECONDS" -lt "$deadline" ] || { node_list >&2; die "not all ${#NODES[@]} nodes Ready within $1 s"; }
        sleep 0.2
    done
}

# wait_node_status NODE STATUS SECONDS: until the manager lists NODE with STATUS (Ready, Down).
wait_node_status() {
    local deadline=$((SECONDS + $3))
    until node_list | awk -v n="$1" -v s="$2" '$1 == n && $2 == s { found = 1 } END { exit !found }'; do
        [ "$SECONDS" -lt "$deadline" ] || { node_list >&2; die "$1 not $2 within $3 s"; }
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# Verbs.

up() {
    local start node
    start=$(now)
    mkdir -p "$RUN_DIR" "$LIB_DIR" "$LOG_DIR"
    install_packages
    [ -x /usr/bin/docker-registry ] || die "docker-registry is not installed"
    network_up
    registry_up
    host_registry
    # The engines start in parallel (~2.5 s each).
    local pids=() failed=0 pid
    for node in "${NODES[@]}"; do start_engine "$node" & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "an engine did not start (above)"
    swarm_up
    say "up in $(since "$start"): manager unix://$(socket "$MANAGER"), registry $REGISTRY"
}

down() {
    local start node pid mnt
    start=$(now)
    local pids=()
    for node in "${NODES[@]}"; do stop_engine "$node" --kill & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid"; done
    if pid=$(registry_pid); then kill_wait TERM 10 "$pid" || kill_wait KILL 5 "$pid"; fi
    # The engines' mounts (overlay2 layers, shm, netns files), deepest first.
    awk -v a="$RUN_DIR" -v b="$LIB_DIR" 'index($5, a "/") == 1 || index($5, b "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt"; done
    # Empty cgroups the containers left (runc removes them only when it deletes a container).
    local cg
    for node in "${NODES[@]}"; do
        for cg in /sys/fs/cgroup/*"$(cgroup_parent "$node")"; do
            [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        done
    done
    network_down
    rm -rf --one-file-system "$RUN_DIR" "$LIB_DIR"
    say "down in $(since "$start")"
}

status() {
    local ok=0 node pid
    if ip link show "$BRIDGE" >/dev/null 2>&1; then say "bridge $BRIDGE: $HOST_ADDR/24"; else say "bridge $BRIDGE: missing"; ok=1; fi
    if registry_pid >/dev/null && registry_ready 2>/dev/null; then say "registry $REGISTRY: up"; else say "registry $REGISTRY: down"; ok=1; fi
    if host_registry_insecure; then say "host engine: may push to $REGISTRY"; else say "host engine: cannot push to $REGISTRY (run: $0 host-registry)"; ok=1; fi
    for node in "${NODES[@]}"; do
        if engine_ready "$node"; then
            say "$node: engine up at $(socket "$node") ($(netns "$node") $(node_addr "$node"), swarm $(swarm_state "$node"))"
        else
            say "$node: engine down"; ok=1
        fi
    done
    if engine_ready "$MANAGER"; then
        node_list | while read -r line; do say "  node $line"; done
        [ "$(ready_count)" -eq ${#NODES[@]} ] || ok=1
    fi
    return "$ok"
}

print_env() {
    local node i
    echo "MODELPORT_SWARM_MANAGER=unix://$(socket "$MANAGER")"
    echo "MODELPORT_SWARM_REGISTRY=$REGISTRY"
    echo "MODELPORT_SWARM_NODES=$(IFS=,; echo "${NODES[*]}")"
    for node in "${NODES[@]}"; do
        i=$(node_index "$node")
        echo "MODELPORT_SWARM_NODE${i}_HOST=unix://$(socket "$node")"
        echo "MODELPORT_SWARM_NODE${i}_ADDR=$(node_addr "$node")"
        echo "MODELPORT_SWARM_NODE${i}_NETNS=$(netns "$node")"
    done
    echo "MODELPORT_SWARM_DOCKER=$DOCKER"
    echo "MODELPORT_SWARM_SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
}

usage() {
    sed -n '/^#   scripts/s/^#   //p' "$0" >&2
    exit 2
}

main() {
    local verb=${1:-}
    [ $# -eq 0 ] || shift
    case "$verb" in
        env) print_env; return ;;
        docker) [ $# -ge 1 ] || usage; node_index "$1" >/dev/null; node_docker "$@"; return ;;
        nsenter) [ $# -ge 2 ] || usage; local ns; ns=$(netns "$1"); shift; exec nsenter --net="/run/netns/$ns" "$@" ;;
        status) status; return ;;
        up | down | stop-node | start-node | host-registry) ;;
        *) usage ;;
    esac
    [ "$(id -u)" = 0 ] || die "$verb needs root (network namespaces, iptables, engines)"
    # One change at a time: two runs would both create links or start engines.
    mkdir -p "$LOG_DIR"
    exec 9>"/var/lock/modelport-swarm$SUFFIX.lock"
    flock -n 9 || { say "waiting for another swarm-cluster.sh run ..."; flock 9; }
    case "$verb" in
        up) up ;;
        down) down ;;
        host-registry) host_registry ;;
        stop-node)
            [ $# -ge 1 ] && [ "${2:---kill}" = --kill ] || usage
            node_index "$1" >/dev/null
            stop_engine "$@" ;;
        start-node)
            [ $# -eq 1 ] || usage
            node_index "$1" >/dev/null
            start_engine "$1"
            wait_node_status "$1" Ready 30
            say "$1: Ready" ;;
    esac
}

main "$@"
