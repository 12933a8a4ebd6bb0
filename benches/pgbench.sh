#!/usr/bin/env bash
# pgbench straight to Postgres vs through pgscale vs through PgBouncer, side by side, on one throwaway
# PostgreSQL server. Prints a Markdown table (TPS, ratios, latency, proxy CPU per transaction, failures,
# memory per idle client) and saves it to --out. See benches/README.md.
#
# usage: benches/pgbench.sh [options]
#   --duration SECS       length of each pgbench run (default 20)
#   --clients "1 16 64"   client counts to test (default "1 16 64")
#   --rounds N            interleaved rounds: direct, pgscale, PgBouncer, direct, ... (default 2)
#   --scale N             pgbench scale factor (default 10)
#   --tests "LIST"        subset of: select tpcb extended prepared (default all four)
#   --pool N              server connections per pool, pgscale and PgBouncer alike (default 20)
#   --idle-clients N      idle client connections for the memory figure, 0 to skip (default 2000)
#   --out FILE            where to save the table (default bench-results.md)
#   --workers N           pgscale listen.workers (default: pgscale's own default)
#   --no-pgscale          leave pgscale out
#   --no-build            don't run cargo build --release; use the existing binary
#   --no-pgbouncer        leave PgBouncer out
#   --install-pgbouncer   apt-get install pgbouncer if it is not installed
#   -h, --help            this text
# environment: PG_BIN (default /usr/lib/postgresql/15/bin), PGSCALE_BIN (default target/release/pgscale)
# shellcheck disable=SC2015  # "A && B || die" is meant: die when either test fails
set -euo pipefail

usage() { sed -n '/^# usage:/,/^# environment:/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "pgbench.sh: error: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
warn() { echo "!! $*" >&2; }

DURATION=20 CLIENTS="1 16 64" ROUNDS=2 SCALE=10 POOL=20 IDLE=2000 OUT=bench-results.md WORKERS=""
TESTS="select tpcb extended prepared"
USE_PGSCALE=1 BUILD=1 USE_BOUNCER=1 INSTALL_BOUNCER=0
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) need_arg "$@"; DURATION=$2; shift 2 ;;
    --clients) need_arg "$@"; CLIENTS=$2; shift 2 ;;
    --rounds) need_arg "$@"; ROUNDS=$2; shift 2 ;;
    --scale) need_arg "$@"; SCALE=$2; shift 2 ;;
    --tests) need_arg "$@"; TESTS=$2; shift 2 ;;
    --pool) need_arg "$@"; POOL=$2; shift 2 ;;
    --idle-clients) need_arg "$@"; IDLE=$2; shift 2 ;;
    --out) need_arg "$@"; OUT=$2; shift 2 ;;
    --workers) need_arg "$@"; WORKERS=$2; shift 2 ;;
    --no-pgscale) USE_PGSCALE=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-pgbouncer) USE_BOUNCER=0; shift ;;
    --install-pgbouncer) INSTALL_BOUNCER=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in DURATION ROUNDS SCALE POOL IDLE; do
  is_uint "${!v}" || die "--$(echo "$v" | tr 'A-Z_' 'a-z-') must be a whole number, got '${!v}'"
done
[ -z "$WORKERS" ] || is_uint "$WORKERS" || die "--workers must be a whole number"
[ "$DURATION" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$SCALE" -ge 1 ] && [ "$POOL" -ge 1 ] \
  || die "--duration, --rounds, --scale and --pool must be at least 1"
[ -n "${CLIENTS// /}" ] || die "--clients is empty"
for c in $CLIENTS; do
  is_uint "$c" && [ "$c" -ge 1 ] || die "--clients takes whole numbers >= 1, got '$c'"
  [ "$c" -le 290 ] || warn "$c clients exceeds what the direct runs can open (max_connections=300)"
done
declare -A TEST_NAME=([select]="select-only simple" [tpcb]="tpcb-like simple"
  [extended]="select-only extended" [prepared]="select-only prepared")
declare -A TEST_ARGS=([select]="-S -M simple" [tpcb]="-M simple"
  [extended]="-S -M extended" [prepared]="-S -M prepared")
[ -n "${TESTS// /}" ] || die "--tests is empty"
for t in $TESTS; do [ -n "${TEST_NAME[$t]:-}" ] || die "unknown test '$t' (known: select tpcb extended prepared)"; done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${PGSCALE_ROOT:-$(cd "$HERE/.." && pwd)}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGSCALE_BIN=${PGSCALE_BIN:-$ROOT/target/release/pgscale}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
[ -d "$(dirname "$OUT")" ] && [ -w "$(dirname "$OUT")" ] || die "cannot write $OUT"
for b in initdb pg_ctl postgres pgbench pg_isready psql; do
  [ -x "$PG_BIN/$b" ] || die "$PG_BIN/$b not found (install postgresql-15 or set PG_BIN)"
done
command -v python3 >/dev/null || die "python3 is needed"
command -v timeout >/dev/null || die "timeout (coreutils) is needed"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run Postgres and PgBouncer as"
  command -v runuser >/dev/null || die "runuser (util-linux) is needed when running as root"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

# ---------------------------------------------------------------- processes and cleanup
WORK="" PG_STARTED=0 PGPID="" PSPID="" BNWRAP="" BNPID="" IDLE_PID="" CHILD=""
alive() { [ -n "$1" ] && [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# stop PID [our child?]: SIGTERM, up to 5 s, then SIGKILL.
stop() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [ "${2:-}" = child ]; then wait "$pid" 2>/dev/null || true; fi
  return 0
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop "$CHILD" child
  stop "$IDLE_PID" child
  stop "$PSPID" child
  [ -z "$BNPID" ] && [ -n "$WORK" ] && [ -s "$WORK/pgbouncer.pid" ] && BNPID=$(cat "$WORK/pgbouncer.pid")
  stop "$BNPID"
  stop "$BNWRAP" child
  if [ "$PG_STARTED" = 1 ]; then
    [ -z "$PGPID" ] && PGPID=$(head -1 "$WORK/data/postmaster.pid" 2>/dev/null)
    if ! as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast -w -t 30 stop >/dev/null 2>&1 && alive "$PGPID"; then
      # pg_ctl needs the data directory; if it is gone, signal the postmaster: SIGINT = fast shutdown.
      kill -INT "$PGPID" 2>/dev/null
      for _ in $(seq 300); do alive "$PGPID" || break; sleep 0.1; done
      alive "$PGPID" && { kill -QUIT "$PGPID" 2>/dev/null; sleep 1; }
      alive "$PGPID" && warn "could not stop the Postgres server (pid $PGPID, $WORK/data)"
    fi
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT
trap 'warn "terminated"; exit 143' TERM
# run_child OUTFILE COMMAND...: run COMMAND in the background with its output in OUTFILE and wait for it,
# so that INT/TERM are handled at once (cleanup kills it) and our own messages stay on our stderr.
run_child() {
  local rc=0 out=$1; shift
  "$@" >"$out" 2>&1 & CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

WORK=$(mktemp -d /tmp/pgscale-bench.XXXXXX)
chmod 755 "$WORK"
mkdir "$WORK/sock" "$WORK/res"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK" "$WORK/sock"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_ready PORT PID LABEL: until a real query works through PORT (PID must stay alive), 20 s at most.
wait_ready() {
  local port=$1 pid=$2 label=$3
  for _ in $(seq 200); do
    if [ -n "$pid" ] && ! alive "$pid"; then warn "$label exited during startup"; return 1; fi
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 \
      && [ "$(PGCONNECT_TIMEOUT=5 timeout 10 "$PG_BIN/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d postgres \
              -Atc 'select 1' 2>/dev/null)" = 1 ]; then
      return 0
    fi
    sleep 0.1
  done
  warn "$label does not answer 'select 1' on port $port"
  return 1
}
# Both print nothing (and succeed) if the process is gone.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || true; }  # utime+stime
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
TICK=$(getconf CLK_TCK)
# Idle-client runs need one descriptor per client; children (pgscale, python) inherit this.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$IDLE" -gt 0 ] && [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((IDLE + 200)) ]; then
  warn "open-files limit is $NOFILE; $IDLE idle clients may not fit (raise the hard limit)"
fi

# ---------------------------------------------------------------- Postgres
say "starting PostgreSQL ($("$PG_BIN/postgres" --version)) in $WORK"
as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C -N >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
PGPORT=$(free_port)
PG_STARTED=1
if ! as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 -o "-p $PGPORT -k $WORK/sock \
    -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c shared_buffers=256MB" start >/dev/null; then
  tail -20 "$WORK/postgres.log" >&2 || true
  die "PostgreSQL did not start"
fi
PGPID=$(head -1 "$WORK/data/postmaster.pid")
say "PostgreSQL on 127.0.0.1:$PGPORT; pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s "$SCALE" -q postgres >"$WORK/init.log" 2>&1 \
  || { cat "$WORK/init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------- pgscale
PSPORT="" PGSCALE_NOTE=""
skip_pgscale() { PGSCALE_NOTE=$1; warn "pgscale skipped: $1"; stop "$PSPID" child; PSPID="" PSPORT=""; }
if [ "$USE_PGSCALE" = 1 ]; then
  if [ "$BUILD" = 1 ]; then
    if ! command -v cargo >/dev/null; then
      warn "cargo not found; using the existing binary if there is one"
    else
      say "building pgscale (cargo build --release in $ROOT)"
      (cd "$ROOT" && cargo build --release) >"$WORK/cargo.log" 2>&1 \
        || { tail -30 "$WORK/cargo.log" >&2; warn "cargo build --release failed"; BUILD=failed; }
    fi
  fi
  if [ "$BUILD" = failed ]; then
    skip_pgscale "cargo build --release failed"
  elif [ ! -x "$PGSCALE_BIN" ]; then
    skip_pgscale "$PGSCALE_BIN not found"
  else
    PSPORT=$(free_port)
    {
      echo "[listen]"
      echo "address = \"127.0.0.1:$PSPORT\""
      [ -n "$WORKERS" ] && echo "workers = $WORKERS"
      [ "$IDLE" -ge 9000 ] && echo "max_client_conn = $((IDLE + 1000))"
      echo "[pool]"
      echo "mode = \"transaction\""
      echo "pool_size = $POOL"
      echo "[[users]]"
      echo "name = \"postgres\""
      echo "auth = \"trust\""
      echo "[[shards]]"
      echo "primary = \"postgres://127.0.0.1:$PGPORT\""
    } >"$WORK/pgscale.toml"
    say "starting pgscale on 127.0.0.1:$PSPORT"
    RUST_LOG=${RUST_LOG:-warn} "$PGSCALE_BIN" serve --config "$WORK/pgscale.toml" >"$WORK/pgscale.log" 2>&1 &
    PSPID=$!
    if ! wait_ready "$PSPORT" "$PSPID" pgscale; then
      tail -20 "$WORK/pgscale.log" >&2 || true
      skip_pgscale "did not start or does not answer select 1"
    fi
  fi
else
  PGSCALE_NOTE="--no-pgscale"
fi

# ---------------------------------------------------------------- PgBouncer
BNPORT="" BOUNCER_NOTE="" BOUNCER_VERSION=""
find_bouncer() { command -v pgbouncer 2>/dev/null || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; } || true; }
skip_bouncer() {
  BOUNCER_NOTE=$1; warn "PgBouncer skipped: $1"
  [ -s "$WORK/pgbouncer.pid" ] && stop "$(cat "$WORK/pgbouncer.pid")"
  stop "$BNWRAP" child; BNWRAP="" BNPID="" BNPORT=""
}
if [ "$USE_BOUNCER" = 1 ]; then
  BOUNCER=$(find_bouncer)
  if [ -z "$BOUNCER" ] && [ "$INSTALL_BOUNCER" = 1 ]; then
    say "installing pgbouncer (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer; } >"$WORK/apt.log" 2>&1 \
      || { tail -10 "$WORK/apt.log" >&2; warn "apt-get install pgbouncer failed"; }
    BOUNCER=$(find_bouncer)
  fi
  if [ -z "$BOUNCER" ]; then
    skip_bouncer "not installed (apt-get install -y pgbouncer, or pass --install-pgbouncer)"
  else
    BOUNCER_VERSION=$("$BOUNCER" --version 2>/dev/null | head -1)
    BNPORT=$(free_port)
    echo '"postgres" ""' >"$WORK/userlist.txt"
    cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PGPORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BNPORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = $(( IDLE + 100 > 3000 ? IDLE + 100 : 3000 ))
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
    [ "$(id -u)" = 0 ] && chown postgres: "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
    say "starting $BOUNCER_VERSION on 127.0.0.1:$BNPORT"
    # shellcheck disable=SC2016  # expanded by the inner sh
    # runuser's PAM session resets the open-files limit to the postgres user's (often 1024): raise it again.
    as_pg sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$1"' "$BOUNCER" "$WORK/pgbouncer.ini" \
      >"$WORK/pgbouncer.out" 2>&1 &
    BNWRAP=$!
    bn_ok=0
    if wait_ready "$BNPORT" "$BNWRAP" PgBouncer; then
      for _ in $(seq 50); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
      [ -s "$WORK/pgbouncer.pid" ] && bn_ok=1
    fi
    if [ "$bn_ok" = 1 ]; then
      BNPID=$(cat "$WORK/pgbouncer.pid")
      alive "$BNPID" || skip_bouncer "no process behind $WORK/pgbouncer.pid"
    else
      cat "$WORK/pgbouncer.out" >&2 || true; tail -20 "$WORK/pgbouncer.log" >&2 2>/dev/null || true
      skip_bouncer "did not start or does not answer select 1"
    fi
  fi
else
  BOUNCER_NOTE="--no-pgbouncer"
fi

# ---------------------------------------------------------------- pgbench runs
# run TARGET PORT PID TEST CLIENTS ROUND: one pgbench run; appends a line to $WORK/res/TARGET.TEST.CLIENTS:
#   "ok TPS LATENCY_MS FAILED_TXNS CPU_US_PER_TXN" or "fail". Sets SUMMARY (not run in a subshell, so that
#   an interrupt reaches cleanup with CHILD set).
run() {
  local target=$1 port=$2 pid=$3 test=$4 clients=$5 round=$6
  local res="$WORK/res/$target.$test.$clients" out="$WORK/run.out"
  local jobs=$(( clients < 2 ? clients : 2 )) before="" after="" rc=0
  if [ -n "$pid" ] && ! alive "$pid"; then
    echo fail >>"$res"
    echo "$target, ${TEST_NAME[$test]}, $clients clients, round $round: proxy is not running" >>"$WORK/errors.log"
    SUMMARY="$target=DEAD"; return
  fi
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086
  run_child "$out" timeout --foreground -k 5 $((DURATION * 3 + 60)) "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres \
    -n -T "$DURATION" -c "$clients" -j "$jobs" ${TEST_ARGS[$test]} postgres || rc=$?
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  cp "$out" "$WORK/res/log.$target.$test.$clients.$round"
  local tps lat failed txns
  tps=$(awk '/^tps = .*without initial connection time/ { print $3; exit }' "$out")
  lat=$(awk '/^latency average = / { print $4; exit }' "$out")
  failed=$(awk '/^number of failed transactions: / { print $5; exit }' "$out")
  txns=$(awk '/^number of transactions actually processed: / { split($6, a, "/"); print a[1]; exit }' "$out")
  if [ "$rc" != 0 ] || [ -z "$tps" ] || [ -z "$txns" ] || [ "$txns" = 0 ]; then
    local why
    why=$(grep -m1 -E 'error|ERROR|FATAL|aborted' "$out" || true)
    [ "$rc" = 124 ] && why="timed out; $why"
    [ -n "$why" ] || why="exit status $rc: $(tail -1 "$out")"
    echo fail >>"$res"
    why=$(sed -E 's/^pgbench: (error: )?//; s/  +/ /g' <<<"$why")
    echo "$target, ${TEST_NAME[$test]}, $clients clients, round $round: $why" >>"$WORK/errors.log"
    SUMMARY="$target=FAILS"; return
  fi
  local cpu=-
  if [ -n "$pid" ]; then
    if [ -n "$before" ] && [ -n "$after" ]; then
      cpu=$(awk -v a="$before" -v b="$after" -v t="$TICK" -v n="$txns" 'BEGIN { printf "%.2f", (b - a) / t * 1e6 / n }')
    else
      echo "$target, ${TEST_NAME[$test]}, $clients clients, round $round: proxy exited during the run" >>"$WORK/errors.log"
      echo fail >>"$res"; SUMMARY="$target=DIED"; return
    fi
  fi
  echo "ok $tps ${lat:-0} ${failed:-0} $cpu" >>"$res"
  SUMMARY=$(printf '%s=%.0f' "$target" "$tps")
}

TARGETS="direct"
[ -n "$PSPORT" ] && TARGETS="$TARGETS pgscale"
[ -n "$BNPORT" ] && TARGETS="$TARGETS pgbouncer"
port_of() { case $1 in direct) echo "$PGPORT" ;; pgscale) echo "$PSPORT" ;; pgbouncer) echo "$BNPORT" ;; esac; }
pid_of() { case $1 in direct) echo "" ;; pgscale) echo "$PSPID" ;; pgbouncer) echo "$BNPID" ;; esac; }
nruns=$(( ROUNDS * $(wc -w <<<"$TESTS") * $(wc -w <<<"$CLIENTS") * $(wc -w <<<"$TARGETS") ))
say "$nruns pgbench runs of ${DURATION}s (about $(( nruns * (DURATION + 1) / 60 + 1 )) min): $TARGETS"
for round in $(seq "$ROUNDS"); do
  for test in $TESTS; do
    for c in $CLIENTS; do
      line="round $round/$ROUNDS  ${TEST_NAME[$test]}  $c clients:"
      for target in $TARGETS; do
        run "$target" "$(port_of "$target")" "$(pid_of "$target")" "$test" "$c" "$round"
        line="$line $SUMMARY"
      done
      say "$line"
    done
  done
done

# ---------------------------------------------------------------- idle-client memory
# idle_rss PORT PID: "BYTES_PER_CLIENT|detail", or "-|why"
idle_rss() {
  local port=$1 pid=$2 before after
  alive "$pid" || { echo "-|proxy is not running"; return; }
  before=$(rss_kb "$pid")
  python3 "$HERE/idle_clients.py" 127.0.0.1 "$port" "$IDLE" --hold 3600 >"$WORK/idle.out" 2>"$WORK/idle.err" </dev/null &
  IDLE_PID=$!
  for _ in $(seq 1500); do  # up to 5 minutes
    grep -q '^ready' "$WORK/idle.out" && break
    alive "$IDLE_PID" || break
    sleep 0.2
  done
  if ! grep -q "^ready $IDLE\$" "$WORK/idle.out"; then
    stop "$IDLE_PID" child; IDLE_PID=""
    echo "-|idle clients failed: $(tail -1 "$WORK/idle.err" 2>/dev/null)"; return
  fi
  sleep 1
  after=$(rss_kb "$pid")
  stop "$IDLE_PID" child; IDLE_PID=""
  [ -n "$after" ] || { echo "-|proxy exited while holding idle clients"; return; }
  awk -v a="$before" -v b="$after" -v n="$IDLE" \
    'BEGIN { printf "%.0f|RSS %.1f MB -> %.1f MB", (b - a) * 1024 / n, a / 1024, b / 1024 }'
}
MEM_PGSCALE="" MEM_BOUNCER=""
if [ "$IDLE" -gt 0 ]; then
  if [ -n "$PSPORT" ]; then
    say "pgscale memory with $IDLE idle clients"
    MEM_PGSCALE=$(idle_rss "$PSPORT" "$PSPID")
  fi
  if [ -n "$BNPORT" ]; then
    say "PgBouncer memory with $IDLE idle clients"
    MEM_BOUNCER=$(idle_rss "$BNPORT" "$BNPID")
  fi
fi

# ---------------------------------------------------------------- table
# agg FILE COLUMN DECIMALS: mean over the rounds; "fails" if a round failed; "n/a" for a target not run.
agg() {
  [ -f "$1" ] || { echo "n/a"; return; }
  awk -v c="$2" -v d="$3" '$1 == "fail" { f = 1; next } $c != "-" { s += $c; n++ }
    END { if (f) print "fails"; else if (n) printf "%.*f\n", d, s / n; else print "-" }' "$1"
}
total_failed() {
  [ -f "$1" ] || { echo "n/a"; return; }
  awk '$1 == "ok" { s += $4 } $1 == "fail" { f = 1 } END { print s + 0 (f ? " (+aborted)" : "") }' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'; }
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && rev="$rev+dirty"
{
  echo "## pgbench: direct vs pgscale vs PgBouncer"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; $("$PG_BIN/postgres" --version);" \
    "pgscale ${PSPORT:+$rev}${PGSCALE_NOTE:+not run ($PGSCALE_NOTE)};" \
    "${BOUNCER_VERSION:-PgBouncer}${BOUNCER_NOTE:+ not run ($BOUNCER_NOTE)}."
  echo "pgbench -T $DURATION -j min(clients,2), scale $SCALE; transaction pooling, $POOL server connections per pool;" \
    "$ROUNDS interleaved round(s), figures are means over rounds. fsync=off, synchronous_commit=off."
  echo
  echo "| test | clients | direct TPS | pgscale TPS | PgBouncer TPS | pgscale/direct | pgscale/PgBouncer" \
    "| latency ms direct | latency ms pgscale | latency ms PgBouncer | CPU µs/txn pgscale | CPU µs/txn PgBouncer" \
    "| failed txns direct / pgscale / PgBouncer |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
  for test in $TESTS; do
    for c in $CLIENTS; do
      d="$WORK/res/direct.$test.$c" p="$WORK/res/pgscale.$test.$c" b="$WORK/res/pgbouncer.$test.$c"
      dt=$(agg "$d" 2 0) pt=$(agg "$p" 2 0) bt=$(agg "$b" 2 0)
      echo "| ${TEST_NAME[$test]} | $c | $dt | $pt | $bt | $(ratio "$pt" "$dt") | $(ratio "$pt" "$bt")" \
        "| $(agg "$d" 3 3) | $(agg "$p" 3 3) | $(agg "$b" 3 3) | $(agg "$p" 5 1) | $(agg "$b" 5 1)" \
        "| $(total_failed "$d") / $(total_failed "$p") / $(total_failed "$b") |"
    done
  done
  if [ "$IDLE" -gt 0 ] && [ -n "$MEM_PGSCALE$MEM_BOUNCER" ]; then
    echo
    echo "Memory per idle client: RSS growth of the proxy process / $IDLE clients that logged in and stay idle."
    echo
    [ -n "$MEM_PGSCALE" ] && echo "- pgscale: ${MEM_PGSCALE%%|*} bytes (${MEM_PGSCALE#*|})"
    [ -n "$MEM_BOUNCER" ] && echo "- PgBouncer: ${MEM_BOUNCER%%|*} bytes (${MEM_BOUNCER#*|})"
  fi
  if [ -s "$WORK/errors.log" ]; then
    echo
    echo "Runs that failed (counted as \"fails\" above):"
    echo
    sed 's/^/- /' "$WORK/errors.log"
  fi
  true
} >"$OUT"
echo
cat "$OUT"
say "saved to $OUT"
