# Compact progress for the set-up scripts (sourced): `say` prints one timed line, `logged` runs a
# command with its output in $LOG_DIR/NAME.log and shows the log's tail (and names it) if it fails.
# The sourcing script sets PROGRESS_TAG (the lines' tag) and LOG_DIR first.
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
