# What the set-up scripts share (sourced): `say` prints one timed line, `logged` runs a command with its
# output in $LOG_DIR/NAME.log and shows the log's tail (and names it) if it fails, `install_packages`
# installs those of PACKAGES that are missing. The sourcing script sets PROGRESS_TAG, PROGRESS_NAME,
# LOG_DIR and PACKAGES first.
now() { date +%s%N; }
since() { local ms=$((($(now) - $1) / 1000000)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }
T0=$(now)
readonly T0
say() { printf '[%s %7s] %s\n' "$PROGRESS_TAG" "$(since "$T0")" "$*"; }
die() { printf '%s: error: %s\n' "$PROGRESS_NAME" "$*" >&2; exit 1; }

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
