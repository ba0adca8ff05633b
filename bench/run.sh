#!/usr/bin/env bash
# hookrelay benchmark: hookrelay against a bare axum baseline on 127.0.0.1.
# What it measures and how to read it: bench/README.md. Not part of `cargo test`.
#
#   bench/run.sh                  # full run: 3 rounds, about 7 minutes
#   ROUNDS=1 DURATION=5 bench/run.sh   # a quick look
#
# Settings (environment): ROUNDS (3), DURATION seconds per run (10),
# CONNS ("16 64"), RATE fixed-rate req/s (2000), RATE_CONNS (16),
# WRK_THREADS (1), FIRST_EMIT (250000), PORT (18080), BASE_PORT (18081), KEEP=1 keeps the work dir,
# CASES ("baseline zego-unique zego-dup netease"), RATE_CASES ("baseline zego-unique"),
# CARGO_TARGET_DIR (target), OUT (bench/results).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-"16 64"}
RATE=${RATE:-2000}
RATE_CONNS=${RATE_CONNS:-16}
WRK_THREADS=${WRK_THREADS:-1}
PORT=${PORT:-18080}
BASE_PORT=${BASE_PORT:-18081}
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
OUT=${OUT:-bench/results}
CASES=${CASES:-"baseline zego-unique zego-dup netease"}
RATE_CASES=${RATE_CASES:-"baseline zego-unique"}
FIRST_EMIT=${FIRST_EMIT:-250000} # unique requests emitted for a case's first run
DUP_SET=${DUP_SET:-2000}         # the fixed set the duplicates case replays
BASE_SET=${BASE_SET:-50000}      # requests the baseline cycles through

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools ------------------------------------------------------------------

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]} from Debian's packages"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to install ${need_apt[*]} (or install them yourself)"
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo is needed (a Rust toolchain)"

log "building release binaries (hookrelay, examples/baseline, examples/loadgen) into $TARGET"
CARGO_TARGET_DIR="$TARGET" cargo build --release --locked --quiet \
  --bin hookrelay --example baseline --example loadgen
BIN="$TARGET/release"
HOOKRELAY="$BIN/hookrelay"
BASELINE="$BIN/examples/baseline"
LOADGEN="$BIN/examples/loadgen"
"$HOOKRELAY" send --help >/dev/null 2>&1 || die "$HOOKRELAY has no \`send\` subcommand"

# ---- work dir, servers, cleanup ---------------------------------------------

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy "$PORT" && die "127.0.0.1:$PORT is in use (set PORT=...)"
port_busy "$BASE_PORT" && die "127.0.0.1:$BASE_PORT is in use (set BASE_PORT=...)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hookrelay-bench.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR="$ROOT/$OUT/$STAMP"
mkdir -p "$RESULTS_DIR"
RESULTS="$RESULTS_DIR/results.txt"
: >"$RESULTS"
SERVER_PID=""
BASE_PID=""

cleanup() {
  local rc=$?
  ((rc == 0)) || log "stopped early (exit status $rc); partial results in $RESULTS_DIR"
  for pid in $SERVER_PID $BASE_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $SERVER_PID $BASE_PID; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -f "$WORK/server.log" ]; then cp "$WORK/server.log" "$RESULTS_DIR/server.log" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted by a signal; stopping"; exit 130' INT TERM

SINK="$WORK/events.jsonl"
SPOOL="$WORK/spool"
CONFIG="$WORK/hookrelay.toml"
cat >"$CONFIG" <<EOF
# Written by bench/run.sh.
[server]
listen = "127.0.0.1:$PORT"
# Default freshness check (300 s): requests are emitted right before each run.
[log]
level = "warn"
[spool]
dir = "$SPOOL"
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
name = "file"
path = "$SINK"
EOF

wait_port() {
  for _ in $(seq 1 100); do port_busy "$1" && return 0; sleep 0.1; done
  return 1
}

"$BASELINE" "127.0.0.1:$BASE_PORT" 2>"$WORK/baseline.log" &
BASE_PID=$!
wait_port "$BASE_PORT" || die "the baseline did not start: $(cat "$WORK/baseline.log")"
"$HOOKRELAY" serve --config "$CONFIG" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_port "$PORT" || die "hookrelay did not start: $(tail -5 "$WORK/server.log")"
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || die "hookrelay /healthz failed"
log "hookrelay pid $SERVER_PID on 127.0.0.1:$PORT, baseline pid $BASE_PID on 127.0.0.1:$BASE_PORT, work dir $WORK"

# ---- measurements -----------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
# utime+stime of a process, in microseconds (fields 14 and 15 of /proc/PID/stat).
cpu_us() { sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$CLK_TCK" '{ printf "%d", ($12 + $13) * 1000000 / hz }'; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
now_ms() { date +%s%3N; }

# Lines in the file sink, counted incrementally (the file grows to gigabytes).
SINK_OFF=0
SINK_LINES=0
sink_lines() {
  local size
  size=$(stat -c %s "$SINK" 2>/dev/null || echo 0)
  if ((size > SINK_OFF)); then
    local n
    # The file grows while it is read: head stops at `size` and tail may then
    # die of SIGPIPE, which is fine here (hence no pipefail in this subshell).
    n=$(set +o pipefail; tail -c +$((SINK_OFF + 1)) "$SINK" | head -c $((size - SINK_OFF)) | tr -cd '\n' | wc -c)
    SINK_LINES=$((SINK_LINES + n))
    SINK_OFF=$size
  fi
}

ACKED_NEW=0   # 200 duplicate:false answers from hookrelay, all runs
INFLIGHT_MAX=0 # requests that may have been stored but unanswered when a load tool stopped
declare -A LAST_RPS

family_of() {
  case "$1" in
    netease) echo cloud-play ;;
    *) echo stream ;;
  esac
}

# emit CASE N FILE: N fresh signed requests as JSON Lines and as wrk input.
emit() {
  "$HOOKRELAY" send --config "$CONFIG" --family "$(family_of "$1")" --emit "$2" --out "$3.jsonl" 2>/dev/null
  "$LOADGEN" wrk-file "$3.jsonl" "$3.wrk" --host "127.0.0.1:$PORT" 2>/dev/null
}

# The value of KEY in a RESULT line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# wrk_run PORT FILE CONNS [SECONDS]: prints the RESULT line.
wrk_run() {
  wrk -t"$WRK_THREADS" -c"$3" -d"${4:-$DURATION}s" --timeout 10s -s "$ROOT/bench/requests.lua" \
    "http://127.0.0.1:$1" -- "$2" "$WRK_THREADS" | grep '^RESULT' | sed 's/^RESULT //'
}

# After a run that stored events: wait until the file sink holds every
# acknowledged event; sets LAG_END (events behind when the load stopped) and
# DRAIN_MS (how long catching up took).
drain() {
  local expected=$1 t0 deadline
  t0=$(now_ms)
  sink_lines
  LAG_END=$((expected > SINK_LINES ? expected - SINK_LINES : 0))
  deadline=$((t0 + 60000))
  while ((SINK_LINES < expected)) && (($(now_ms) < deadline)); do
    sleep 0.02
    sink_lines
  done
  DRAIN_MS=$(($(now_ms) - t0))
  ((SINK_LINES >= expected)) || log "warning: the file sink holds $SINK_LINES events, $expected acknowledged"
}

# sat_run ROUND CASE CONNS
sat_run() {
  local round=$1 case=$2 conns=$3 port=$PORT file res c0 c1 cdrain
  case "$case" in
    baseline) port=$BASE_PORT; file="$WORK/base" ;;
    zego-dup)
      # A fresh set each time (signed timestamps age), stored once, then replayed.
      emit zego-dup "$DUP_SET" "$WORK/dup"
      sink_lines
      local primed
      primed=$("$LOADGEN" once --requests "$WORK/dup.jsonl" --addr "127.0.0.1:$PORT" --connections 8 | sed 's/^RESULT //')
      [ "$(field "$primed" ok_new)" = "$DUP_SET" ] || die "storing the duplicates set: $primed"
      ACKED_NEW=$((ACKED_NEW + DUP_SET))
      drain $((SINK_LINES + DUP_SET))
      file="$WORK/dup"
      ;;
    *)
      # Twice what the last run of this case managed, and at least FIRST_EMIT,
      # so a run never has to repeat a request.
      local n=${LAST_RPS[$case-$conns]:-0}
      n=$((n * DURATION * 2))
      ((n >= FIRST_EMIT)) || n=$FIRST_EMIT
      emit "$case" "$n" "$WORK/uniq"
      file="$WORK/uniq"
      ;;
  esac
  local pid=$SERVER_PID
  [ "$case" = baseline ] && pid=$BASE_PID
  sink_lines
  local before=$SINK_LINES
  c0=$(cpu_us "$pid")
  res=$(wrk_run "$port" "$file.wrk" "$conns")
  c1=$(cpu_us "$pid")
  [ -n "$res" ] || die "wrk printed no result for $case at $conns connections"
  local extra=""
  if [ "$case" != baseline ]; then
    local new
    new=$(field "$res" ok_new)
    ACKED_NEW=$((ACKED_NEW + new))
    INFLIGHT_MAX=$((INFLIGHT_MAX + conns))
    if [ "$case" != zego-dup ]; then
      drain $((before + new))
      cdrain=$(cpu_us "$pid")
      extra="cpu_drained_us=$((cdrain - c0)) sink_lag_end=$LAG_END drain_ms=$DRAIN_MS"
    fi
  fi
  LAST_RPS[$case-$conns]=$(printf '%.0f' "$(field "$res" rps)")
  echo "kind=run mode=sat round=$round case=$case conns=$conns cpu_us=$((c1 - c0)) $extra $res" >>"$RESULTS"
  log "round $round  $case  c=$conns  $(printf '%8.0f' "$(field "$res" rps)") req/s  p50 $(field "$res" p50_us) µs  p99 $(field "$res" p99_us) µs  CPU $(((c1 - c0) / $(field "$res" requests))) µs/req  non-2xx $(field "$res" non2xx)  errors $(field "$res" errors)"
  sleep 1
}

# rate_run ROUND CASE
rate_run() {
  local round=$1 case=$2 port=$PORT pid=$SERVER_PID res c0 c1
  [ "$case" = baseline ] && { port=$BASE_PORT; pid=$BASE_PID; }
  "$HOOKRELAY" send --config "$CONFIG" --family stream --emit $((RATE * DURATION + 1000)) --out "$WORK/rate.jsonl" 2>/dev/null
  sink_lines
  local before=$SINK_LINES
  c0=$(cpu_us "$pid")
  res=$("$LOADGEN" rate --requests "$WORK/rate.jsonl" --addr "127.0.0.1:$port" --rate "$RATE" \
    --duration "$DURATION" --connections "$RATE_CONNS" | grep '^RESULT' | sed 's/^RESULT //')
  c1=$(cpu_us "$pid")
  local extra=""
  if [ "$case" != baseline ]; then
    local new
    new=$(field "$res" ok_new)
    ACKED_NEW=$((ACKED_NEW + new))
    drain $((before + new))
    extra="cpu_drained_us=$(($(cpu_us "$pid") - c0)) sink_lag_end=$LAG_END drain_ms=$DRAIN_MS"
  fi
  echo "kind=run mode=rate round=$round case=$case conns=$RATE_CONNS cpu_us=$((c1 - c0)) $extra $res" >>"$RESULTS"
  log "round $round  $case  fixed $RATE req/s  achieved $(field "$res" rps)  p50 $(field "$res" p50_us) µs  p99 $(field "$res" p99_us) µs  p99.9 $(field "$res" p999_us) µs  max $(field "$res" max_us) µs"
  sleep 1
}

# ---- the run ----------------------------------------------------------------

START=$(date +%s)
log "emitting request sets"
emit zego-unique "$BASE_SET" "$WORK/base"
"$LOADGEN" wrk-file "$WORK/base.jsonl" "$WORK/base.wrk" --host "127.0.0.1:$BASE_PORT" 2>/dev/null

log "warm-up (not recorded)"
wrk_run "$BASE_PORT" "$WORK/base.wrk" 64 3 >/dev/null
emit zego-unique 60000 "$WORK/uniq"
sink_lines
before=$SINK_LINES
res=$(wrk_run "$PORT" "$WORK/uniq.wrk" 64 3)
ACKED_NEW=$((ACKED_NEW + $(field "$res" ok_new)))
INFLIGHT_MAX=$((INFLIGHT_MAX + 64))
drain $((before + $(field "$res" ok_new)))

for round in $(seq 1 "$ROUNDS"); do
  for conns in $CONNS; do
    for case in $CASES; do
      sat_run "$round" "$case" "$conns"
    done
  done
  for case in $RATE_CASES; do
    rate_run "$round" "$case"
  done
  sink_lines
  spool_bytes=$(du -sb "$SPOOL" | cut -f1)
  echo "kind=round round=$round rss_kb=$(status_kb "$SERVER_PID" VmRSS) hwm_kb=$(status_kb "$SERVER_PID" VmHWM) base_hwm_kb=$(status_kb "$BASE_PID" VmHWM) spool_bytes=$spool_bytes sink_lines=$SINK_LINES" >>"$RESULTS"
  log "round $round done: hookrelay VmRSS $(status_kb "$SERVER_PID" VmRSS) kB, VmHWM $(status_kb "$SERVER_PID" VmHWM) kB, spool $((spool_bytes / 1048576)) MiB, sink $SINK_LINES events"
done

# ---- checks -----------------------------------------------------------------

log "checking that every acknowledged event reached the file sink"
drain "$ACKED_NEW"
sleep 1
sink_lines
extra=$((SINK_LINES - ACKED_NEW))
dups=$(cut -c1-46 "$SINK" | sort | uniq -d | wc -l)
ok=false
if ((SINK_LINES >= ACKED_NEW && extra <= INFLIGHT_MAX && dups == 0)); then ok=true; fi
echo "kind=check what=every_acknowledged_event_reached_the_file_sink ok=$ok detail=${ACKED_NEW}_acknowledged,_${SINK_LINES}_in_the_sink_(${extra}_stored_but_unanswered_when_wrk_stopped,_at_most_${INFLIGHT_MAX}_possible),_${dups}_repeated_ids" >>"$RESULTS"
errors=$(grep -c '"error"\|ERROR' "$WORK/server.log" || true)
echo "kind=check what=no_errors_in_the_server_log ok=$([ "$errors" = 0 ] && echo true || echo false) detail=${errors}_error_lines" >>"$RESULTS"

# ---- report -----------------------------------------------------------------

REPORT="$RESULTS_DIR/report.md"
{
  echo "### Benchmark results, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Code: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')."
  echo
  echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); $(rustc --version | cut -d' ' -f1-2), $(wrk -v 2>&1 | sed -n 1p | cut -d' ' -f1-2)."
  echo
  echo "Load: wrk -t$WRK_THREADS, ${DURATION} s per run, $ROUNDS rounds interleaved (per round and connection count: baseline, unique ZEGO, duplicate ZEGO, unique NetEase), then ${RATE} req/s open loop over $RATE_CONNS connections. Server and load generator share the machine; all on 127.0.0.1. Total time $(( $(date +%s) - START )) s."
  echo
  "$LOADGEN" report "$RESULTS"
} >"$REPORT"
cp "$REPORT" "$ROOT/$OUT/latest.md"
cat "$REPORT"
log "results: $RESULTS_DIR (report.md, results.txt, server.log)"
