#!/usr/bin/env bash
# Profiles hookrelay under saturating load with perf (call graphs via DWARF),
# so optimisation starts from where the time goes. See bench/README.md.
#
#   bench/profile.sh                 # unique ZEGO stream_create events, 64 connections
#   CASE=dup bench/profile.sh        # duplicates only
#   CASE=netease bench/profile.sh    # unique NetEase cloud-play events
#
# Prints CPU per request, the split between threads, the hottest functions
# (self time) and hookrelay's own call tree shares (inclusive); perf.data is
# kept in bench/results/profile-<case>/ for `perf report -i`.
set -eu  # no pipefail: the reports below are cut short with head on purpose
cd "$(dirname "$0")/.."
ROOT=$PWD
CASE=${CASE:-unique}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
PORT=${PORT:-18080}
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
OUTDIR="$ROOT/bench/results/profile-$CASE"
log() { printf '[profile] %s\n' "$*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v perf >/dev/null || missing+=(linux-perf)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
CARGO_TARGET_DIR="$TARGET" cargo build --release --locked --quiet --bin hookrelay --example loadgen
BIN="$TARGET/release"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hookrelay-profile.XXXXXX")
mkdir -p "$OUTDIR"
PID=""
cleanup() {
  [ -n "$PID" ] && { kill -TERM "$PID" 2>/dev/null || true; sleep 1; kill -KILL "$PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
cat >"$WORK/c.toml" <<CONF
[server]
listen = "127.0.0.1:$PORT"
[log]
level = "warn"
[spool]
dir = "$WORK/spool"
[[apps]]
provider = "zego"
app_id = "1234567890"
secret = "bench-zego-callback-secret"
[[apps]]
provider = "netease"
app_id = "bench-netease-appkey"
secret = "bench-netease-appsecret"
[[sinks]]
kind = "file"
path = "$WORK/events.jsonl"
CONF
"$BIN/hookrelay" serve --config "$WORK/c.toml" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

family=stream; n=200000
[ "$CASE" = netease ] && family=cloud-play
[ "$CASE" = dup ] && n=2000
"$BIN/hookrelay" send --config "$WORK/c.toml" --family "$family" --emit "$n" --out "$WORK/r.jsonl" 2>/dev/null
"$BIN/examples/loadgen" wrk-file "$WORK/r.jsonl" "$WORK/r.wrk" 2>/dev/null
if [ "$CASE" = dup ]; then
  "$BIN/examples/loadgen" once --requests "$WORK/r.jsonl" --addr "127.0.0.1:$PORT" >/dev/null
fi

hz=$(getconf CLK_TCK)
c0=$(sed 's/^.*) //' "/proc/$PID/stat" | awk '{print $12 + $13}')
wrk -t1 -c"$CONNS" -d"${DURATION}s" -s bench/requests.lua "http://127.0.0.1:$PORT" -- "$WORK/r.wrk" 1 \
  | grep '^RESULT' >"$WORK/wrk.txt" &
WRK=$!
sleep 2
perf record -q -F 499 --call-graph dwarf,16384 -p "$PID" -o "$OUTDIR/perf.data" -- sleep $((DURATION - 4)) 2>/dev/null
wait $WRK
c1=$(sed 's/^.*) //' "/proc/$PID/stat" | awk '{print $12 + $13}')
req=$(tr ' ' '\n' <"$WORK/wrk.txt" | awk -F= '$1 == "requests" { print $2 }')
echo "case $CASE, $CONNS connections: $(cat "$WORK/wrk.txt")"
echo "server CPU: $(( (c1 - c0) * 1000000 / hz / req )) µs per request (the perf sampling itself adds a little)"
echo
echo "== CPU by thread =="
perf report -i "$OUTDIR/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -5
echo
echo "== hottest functions (self) =="
perf report -i "$OUTDIR/perf.data" --no-children --sort dso,sym --stdio -g none --percent-limit 1 2>/dev/null \
  | grep -E '^ +[0-9]' | cut -c1-150 | head -30
echo
echo "== inclusive shares (hookrelay, SQLite, fsync, checkpoint, sockets; perf lists some functions twice, summed here) =="
perf report -i "$OUTDIR/perf.data" --children --sort sym --stdio -g none --percent-limit 0.8 2>/dev/null \
  | grep -E '^ +[0-9]' \
  | grep -E 'hookrelay::[a-z_:]+(\{\{closure\}\})?$|hookrelay::[a-z_]+::[A-Za-z_]+::[a-z_]+$|sqlite3_step$|execute_batch$|sqlite3WalCheckpoint$|pagerWalFrames$|do_fsync$|__x64_sys_pwrite64$|tcp_sendmsg$|tcp_recvmsg$|malloc$|_int_free$' \
  | awk '{ name = $0; sub(/^ *[0-9.]+% +[0-9.]+% +\[[.k]\] /, "", name); total[name] += $1 } END { for (n in total) printf "%7.2f%%  %s\n", total[n], n }' \
  | sort -rn | cut -c1-150 | head -30
