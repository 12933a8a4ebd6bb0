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
#   --replicas N          also start N streaming replicas of the primary and a second pgscale, pgscale-rw,
#                         that sends reads to them (default 0: no replicas, no pgscale-rw)
#   --tls                 pgscale offers client TLS (tls_mode = "allow", a self-signed certificate from
#                         openssl) and a pgscale-tls target runs the same tests through it with
#                         PGSSLMODE=require (the pgscale target then uses PGSSLMODE=disable); a TLS table follows
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

DURATION=20 CLIENTS="1 16 64" ROUNDS=2 SCALE=10 POOL=20 IDLE=2000 OUT=bench-results.md WORKERS="" REPLICAS=0
TESTS="select tpcb extended prepared"
USE_PGSCALE=1 BUILD=1 USE_BOUNCER=1 INSTALL_BOUNCER=0 TLS=0
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
    --replicas) need_arg "$@"; REPLICAS=$2; shift 2 ;;
    --tls) TLS=1; shift ;;
    --no-pgscale) USE_PGSCALE=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-pgbouncer) USE_BOUNCER=0; shift ;;
    --install-pgbouncer) INSTALL_BOUNCER=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in DURATION ROUNDS SCALE POOL IDLE REPLICAS; do
  is_uint "${!v}" || die "--$(echo "$v" | tr 'A-Z_' 'a-z-') must be a whole number, got '${!v}'"
done
[ -z "$WORKERS" ] || is_uint "$WORKERS" || die "--workers must be a whole number"
[ "$DURATION" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$SCALE" -ge 1 ] && [ "$POOL" -ge 1 ] \
  || die "--duration, --rounds, --scale and --pool must be at least 1"
[ "$REPLICAS" -le 8 ] || die "--replicas takes at most 8 (the primary's max_wal_senders is 10)"
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
[ "$REPLICAS" = 0 ] || [ -x "$PG_BIN/pg_basebackup" ] || die "$PG_BIN/pg_basebackup not found (needed by --replicas)"
command -v python3 >/dev/null || die "python3 is needed"
[ "$TLS" = 0 ] || command -v openssl >/dev/null || die "openssl is needed by --tls (to make the certificate)"
command -v timeout >/dev/null || die "timeout (coreutils) is needed"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run Postgres and PgBouncer as"
  command -v runuser >/dev/null || die "runuser (util-linux) is needed when running as root"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

# ---------------------------------------------------------------- processes and cleanup
WORK="" PG_STARTED=0 PGPID="" PSPID="" RWPID="" BNWRAP="" BNPID="" IDLE_PID="" CHILD=""
# Replica K (1..REPLICAS_STARTED) has its data in $WORK/replicaK, its port in RPORT[K], its postmaster in RPID[K].
REPLICAS_STARTED=0 RPORT=() RPID=()
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
# stop_pg DATADIR [PID]: fast shutdown of the Postgres server in DATADIR.
stop_pg() {
  local data=$1 pid=${2:-}
  [ -z "$pid" ] && pid=$(head -1 "$data/postmaster.pid" 2>/dev/null)
  if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 && alive "$pid"; then
    # pg_ctl needs the data directory; if it is gone, signal the postmaster: SIGINT = fast shutdown.
    kill -INT "$pid" 2>/dev/null
    for _ in $(seq 300); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && { kill -QUIT "$pid" 2>/dev/null; sleep 1; }
    alive "$pid" && warn "could not stop the Postgres server (pid $pid, $data)"
  fi
  return 0
}
cleanup() {
  local rc=$? k
  set +e
  trap - EXIT INT TERM
  stop "$CHILD" child
  stop "$IDLE_PID" child
  stop "$PSPID" child
  stop "$RWPID" child
  [ -z "$BNPID" ] && [ -n "$WORK" ] && [ -s "$WORK/pgbouncer.pid" ] && BNPID=$(cat "$WORK/pgbouncer.pid")
  stop "$BNPID"
  stop "$BNWRAP" child
  # The replicas first, then the primary they stream from.
  for k in $(seq "$REPLICAS_STARTED"); do stop_pg "$WORK/replica$k" "${RPID[k]:-}"; done
  [ "$PG_STARTED" = 1 ] && stop_pg "$WORK/data" "$PGPID"
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
# The replicas get the same settings.
PG_OPTS="-k $WORK/sock -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB"
if ! as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 -o "-p $PGPORT $PG_OPTS" start \
    >/dev/null; then
  tail -20 "$WORK/postgres.log" >&2 || true
  die "PostgreSQL did not start"
fi
PGPID=$(head -1 "$WORK/data/postmaster.pid")
say "PostgreSQL on 127.0.0.1:$PGPORT; pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s "$SCALE" -q postgres >"$WORK/init.log" 2>&1 \
  || { cat "$WORK/init.log" >&2; die "pgbench -i failed"; }
if [ "$REPLICAS" -gt 0 ]; then
  # Where pgscale's health checks and this script's statistics queries go, so that pg_stat_database counts
  # only the benchmark's transactions in database postgres. Made before the base backups: replicas have it too.
  "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c 'create database bench_admin' \
    >"$WORK/createdb.log" 2>&1 || { cat "$WORK/createdb.log" >&2; die "create database bench_admin failed"; }
fi

# ---------------------------------------------------------------- pgscale
PSPORT="" PGSCALE_NOTE=""
skip_pgscale() { PGSCALE_NOTE=$1; warn "pgscale skipped: $1"; stop "$PSPID" child; PSPID="" PSPORT=""; }
# pgscale_config PORT [REPLICA_URL...]: the config of pgscale (no replicas) or pgscale-rw.
pgscale_config() {
  local port=$1 list="" u; shift
  for u in "$@"; do list="$list${list:+, }\"$u\""; done
  echo "[listen]"
  echo "address = \"127.0.0.1:$port\""
  if [ "$TLS" = 1 ]; then
    echo "tls_mode = \"allow\""
    echo "tls_cert = \"$WORK/tls.crt\""
    echo "tls_key = \"$WORK/tls.key\""
  fi
  [ -n "$WORKERS" ] && echo "workers = $WORKERS"
  [ "$IDLE" -ge 9000 ] && echo "max_client_conn = $((IDLE + 1000))"
  echo "[pool]"
  echo "mode = \"transaction\""
  echo "pool_size = $POOL"
  if [ "$REPLICAS" -gt 0 ]; then
    echo "[health]"
    echo "database = \"bench_admin\""
  fi
  echo "[[users]]"
  echo "name = \"postgres\""
  echo "auth = \"trust\""
  echo "[[shards]]"
  echo "primary = \"postgres://127.0.0.1:$PGPORT\""
  [ $# -gt 0 ] && echo "replicas = [$list]"
  true
}
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
    if [ "$TLS" = 1 ]; then
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >"$WORK/openssl.log" 2>&1 \
        || { cat "$WORK/openssl.log" >&2; die "openssl could not make the --tls certificate"; }
    fi
    pgscale_config "$PSPORT" >"$WORK/pgscale.toml"
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

# ---------------------------------------------------------------- replicas and pgscale-rw
RWPORT="" RW_NOTE=""
skip_rw() { RW_NOTE=$1; warn "pgscale-rw skipped: $1"; stop "$RWPID" child; RWPID="" RWPORT=""; }
# start_replica K: base backup of the primary into $WORK/replicaK, started as a hot standby on a free port
# with the primary's settings; waits until it answers and has replayed the pgbench data.
start_replica() {
  local k=$1 data="$WORK/replica$1" port
  as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres -D "$data" -R -X stream -c fast --no-sync \
    >"$WORK/basebackup$k.log" 2>&1 \
    || { cat "$WORK/basebackup$k.log" >&2; warn "pg_basebackup for replica $k failed"; return 1; }
  port=$(free_port)
  REPLICAS_STARTED=$k
  if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$WORK/replica$k.log" -w -t 60 -o "-p $port $PG_OPTS -c hot_standby=on" \
      start >/dev/null; then
    tail -20 "$WORK/replica$k.log" >&2 || true
    warn "replica $k did not start"; return 1
  fi
  RPORT[k]=$port RPID[k]=$(head -1 "$data/postmaster.pid")
  for _ in $(seq 300); do  # about 60 s
    [ "$(PGCONNECT_TIMEOUT=5 timeout 10 "$PG_BIN/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
        "select pg_is_in_recovery() and (select count(*) from pgbench_branches) = $SCALE" 2>/dev/null)" = t ] \
      && return 0
    sleep 0.2
  done
  warn "replica $k (port $port) has not replayed the pgbench data after 60 s"; return 1
}
if [ "$REPLICAS" -gt 0 ]; then
  if [ -z "$PSPORT" ]; then
    skip_rw "pgscale not run (${PGSCALE_NOTE:-?}); no replicas started"
  else
    rw_ok=1
    for k in $(seq "$REPLICAS"); do
      say "starting replica $k/$REPLICAS (pg_basebackup -R -X stream -c fast)"
      start_replica "$k" || { rw_ok=0; break; }
      say "replica $k on 127.0.0.1:${RPORT[k]}"
    done
    if [ "$rw_ok" = 0 ]; then
      skip_rw "replica $k did not start"
    else
      RWPORT=$(free_port)
      urls=()
      for k in $(seq "$REPLICAS"); do urls+=("postgres://127.0.0.1:${RPORT[k]}"); done
      pgscale_config "$RWPORT" "${urls[@]}" >"$WORK/pgscale-rw.toml"
      say "starting pgscale-rw (reads to the replicas) on 127.0.0.1:$RWPORT"
      RUST_LOG=${RUST_LOG:-warn} "$PGSCALE_BIN" serve --config "$WORK/pgscale-rw.toml" >"$WORK/pgscale-rw.log" 2>&1 &
      RWPID=$!
      if ! wait_ready "$RWPORT" "$RWPID" pgscale-rw; then
        tail -20 "$WORK/pgscale-rw.log" >&2 || true
        skip_rw "did not start or does not answer select 1"
      else
        # Until the first health checks pass, reads may go to the primary: wait until one lands on a replica.
        on_replica=""
        for _ in $(seq 100); do
          on_replica=$(PGCONNECT_TIMEOUT=5 timeout 10 "$PG_BIN/psql" -X -h 127.0.0.1 -p "$RWPORT" -U postgres \
            -d postgres -Atc 'select pg_is_in_recovery()' 2>/dev/null || true)
          [ "$on_replica" = t ] && break
          sleep 0.1
        done
        [ "$on_replica" = t ] \
          || warn "pgscale-rw: 'select pg_is_in_recovery()' does not reach a replica (got '$on_replica')"
      fi
    fi
  fi
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
#   "ok TPS LATENCY_MS FAILED_TXNS CPU_US_PER_TXN TXNS" or "fail". Sets SUMMARY (not run in a subshell, so that
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
  run_child "$out" env PGSSLMODE="$(sslmode_of "$target")" \
    timeout --foreground -k 5 $((DURATION * 3 + 60)) "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres \
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
  echo "ok $tps ${lat:-0} ${failed:-0} $cpu $txns" >>"$res"
  SUMMARY=$(printf '%s=%.0f' "$target" "$tps")
}

# Where pgscale-rw's transactions ran: xact_commit of database postgres on the primary and on each replica,
# read before and after each pgscale-rw run. A backend flushes its statistics at exit, and when idle at most
# once a second, or else 10 s later (PGSTAT_IDLE_INTERVAL): so each reading waits until no proxy has run
# for STATS_IDLE_S (then the pooled backends of all proxies have flushed) and no pgbench for 1 s (its
# backends flush as they exit). Health checks and these queries use database bench_admin, not postgres.
STATS_IDLE_S=11 PROXY_END_MS=0 ANY_END_MS=0
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
settle() {
  local now wait_ms
  now=$(now_ms)
  wait_ms=$(( PROXY_END_MS + STATS_IDLE_S * 1000 - now ))
  [ $(( ANY_END_MS + 1000 - now )) -gt "$wait_ms" ] && wait_ms=$(( ANY_END_MS + 1000 - now ))
  [ "$wait_ms" -le 0 ] || run_child /dev/null sleep "$(awk -v m="$wait_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
}
# xacts: "PRIMARY REPLICA1 ... REPLICAN", "?" for a server that did not answer.
xacts() {
  local port v out=""
  for port in "$PGPORT" "${RPORT[@]}"; do
    v=$(PGCONNECT_TIMEOUT=5 timeout 10 "$PG_BIN/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d bench_admin -Atc \
      "select xact_commit from pg_stat_database where datname = 'postgres'" 2>/dev/null || true)
    is_uint "$v" || v="?"
    out="$out${out:+ }$v"
  done
  echo "$out"
}
# xacts_sum FILE...: sums per column of lines "PRIMARY REPLICA1 ..." -> "PRIMARY REPLICAS REPLICA1 ...",
# "?" where a reading was missing; "n/a" if no file exists.
xacts_sum() {
  local f files=()
  for f in "$@"; do [ -f "$f" ] && files+=("$f"); done
  [ "${#files[@]}" -gt 0 ] || { echo "n/a"; return; }
  awk '{ for (i = 1; i <= NF; i++) { if ($i == "?") bad[i] = 1; else s[i] += $i }; if (NF > n) n = NF }
    END { r = 0; rbad = 0; for (i = 2; i <= n; i++) { r += s[i]; if (bad[i]) rbad = 1 }
          out = (bad[1] ? "?" : s[1] + 0) " " (rbad ? "?" : r)
          for (i = 2; i <= n; i++) out = out " " (bad[i] ? "?" : s[i] + 0)
          print out }' "${files[@]}"
}

TARGETS="direct"
# pgscale-rw right after direct: the previous proxy run is then one direct run back, so less waiting in settle.
[ -n "$RWPORT" ] && TARGETS="$TARGETS pgscale-rw"
[ -n "$PSPORT" ] && TARGETS="$TARGETS pgscale"
[ -n "$PSPORT" ] && [ "$TLS" = 1 ] && TARGETS="$TARGETS pgscale-tls"
[ -n "$BNPORT" ] && TARGETS="$TARGETS pgbouncer"
port_of() {
  case $1 in
    direct) echo "$PGPORT" ;; pgscale|pgscale-tls) echo "$PSPORT" ;; pgscale-rw) echo "$RWPORT" ;;
    pgbouncer) echo "$BNPORT" ;;
  esac
}
# With --tls, only pgscale-tls uses TLS; otherwise libpq's default (prefer: no server here offers TLS).
sslmode_of() {
  case $TLS.$1 in 1.pgscale-tls) echo require ;; 1.*) echo disable ;; *) echo prefer ;; esac
}
pid_of() {
  case $1 in direct) echo "" ;; pgscale|pgscale-tls) echo "$PSPID" ;; pgscale-rw) echo "$RWPID" ;; pgbouncer) echo "$BNPID" ;; esac
}
nruns=$(( ROUNDS * $(wc -w <<<"$TESTS") * $(wc -w <<<"$CLIENTS") * $(wc -w <<<"$TARGETS") ))
minutes=$(( nruns * (DURATION + 1) / 60 + 1 ))
[ -n "$RWPORT" ] && minutes=$(( minutes + nruns / $(wc -w <<<"$TARGETS") * 2 * STATS_IDLE_S / 60 ))
say "$nruns pgbench runs of ${DURATION}s (about $minutes min): $TARGETS"
for round in $(seq "$ROUNDS"); do
  for test in $TESTS; do
    for c in $CLIENTS; do
      line="round $round/$ROUNDS  ${TEST_NAME[$test]}  $c clients:"
      for target in $TARGETS; do
        if [ "$target" = pgscale-rw ]; then settle; xa_before=$(xacts); fi
        run "$target" "$(port_of "$target")" "$(pid_of "$target")" "$test" "$c" "$round"
        line="$line $SUMMARY"
        ANY_END_MS=$(now_ms)
        [ "$target" = direct ] || PROXY_END_MS=$ANY_END_MS
        if [ "$target" = pgscale-rw ]; then
          settle
          # this run's "PRIMARY REPLICA1 ..." deltas
          paste -d' ' <(tr ' ' '\n' <<<"$xa_before") <(xacts | tr ' ' '\n') \
            | awk '{ d = ($1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/) ? $2 - $1 : "?"; printf "%s%s", (NR > 1 ? " " : ""), d }
                   END { print "" }' | tee "$WORK/xacts.run" >>"$WORK/res/pgscale-rw.$test.$c.xacts"
          read -r xp xr _ <<<"$(xacts_sum "$WORK/xacts.run")"
          line="$line (commits: primary $xp, replicas $xr)"
        fi
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
RWORD=replicas
[ "$REPLICAS" = 1 ] && RWORD=replica
# txns_sum FILE...: transactions pgbench counted in the runs that did not fail.
txns_sum() {
  local f files=()
  for f in "$@"; do [ -f "$f" ] && files+=("$f"); done
  [ "${#files[@]}" -gt 0 ] || { echo 0; return; }
  awk '$1 == "ok" { s += $6 } END { print s + 0 }' "${files[@]}"
}
{
  if [ "$REPLICAS" -gt 0 ]; then
    echo "## pgbench: direct vs pgscale vs pgscale-rw ($REPLICAS $RWORD) vs PgBouncer"
  else
    echo "## pgbench: direct vs pgscale vs PgBouncer"
  fi
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; $("$PG_BIN/postgres" --version);" \
    "pgscale ${PSPORT:+$rev}${PGSCALE_NOTE:+not run ($PGSCALE_NOTE)};" \
    "${BOUNCER_VERSION:-PgBouncer}${BOUNCER_NOTE:+ not run ($BOUNCER_NOTE)}."
  echo "pgbench -T $DURATION -j min(clients,2), scale $SCALE; transaction pooling, $POOL server connections per pool;" \
    "$ROUNDS interleaved round(s), figures are means over rounds. fsync=off, synchronous_commit=off."
  if [ "$REPLICAS" -gt 0 ]; then
    echo "direct, pgscale and PgBouncer use the primary only; pgscale-rw is a second pgscale with the same settings" \
      "plus \`replicas\` = $REPLICAS streaming $RWORD (hot standby, the primary's settings, on the same cores)," \
      "so reads go to the replicas and writes to the primary${RW_NOTE:+ (pgscale-rw not run: $RW_NOTE)}."
  fi
  echo
  if [ "$REPLICAS" -gt 0 ]; then
    echo "| test | clients | direct TPS | pgscale TPS | pgscale-rw TPS | PgBouncer TPS | pgscale/direct" \
      "| pgscale-rw/direct | pgscale/PgBouncer | latency ms direct | latency ms pgscale | latency ms pgscale-rw" \
      "| latency ms PgBouncer | CPU µs/txn pgscale | CPU µs/txn pgscale-rw | CPU µs/txn PgBouncer" \
      "| failed txns direct / pgscale / pgscale-rw / PgBouncer | pgscale-rw commits primary / replicas |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|"
    for test in $TESTS; do
      for c in $CLIENTS; do
        d="$WORK/res/direct.$test.$c" p="$WORK/res/pgscale.$test.$c" b="$WORK/res/pgbouncer.$test.$c"
        r="$WORK/res/pgscale-rw.$test.$c"
        dt=$(agg "$d" 2 0) pt=$(agg "$p" 2 0) rt=$(agg "$r" 2 0) bt=$(agg "$b" 2 0)
        read -r xp xr _ <<<"$(xacts_sum "$r.xacts")"
        xcol=$xp
        [ -n "$xr" ] && xcol="$xp / $xr"
        echo "| ${TEST_NAME[$test]} | $c | $dt | $pt | $rt | $bt | $(ratio "$pt" "$dt") | $(ratio "$rt" "$dt")" \
          "| $(ratio "$pt" "$bt") | $(agg "$d" 3 3) | $(agg "$p" 3 3) | $(agg "$r" 3 3) | $(agg "$b" 3 3)" \
          "| $(agg "$p" 5 1) | $(agg "$r" 5 1) | $(agg "$b" 5 1)" \
          "| $(total_failed "$d") / $(total_failed "$p") / $(total_failed "$r") / $(total_failed "$b")" \
          "| $xcol |"
      done
    done
    all=()
    for test in $TESTS; do for c in $CLIENTS; do all+=("$WORK/res/pgscale-rw.$test.$c"); done; done
    read -r xp xr xeach <<<"$(xacts_sum "${all[@]/%/.xacts}")"
    if [ -n "$RWPORT" ] && [ -n "$xr" ]; then
      echo
      echo "Where pgscale-rw's transactions ran: \`xact_commit\` of database postgres in \`pg_stat_database\`, summed" \
        "over the pgscale-rw runs: **primary $xp, replicas $xr** (replica 1..$REPLICAS: ${xeach// / + });" \
        "pgbench counted $(txns_sum "${all[@]}") transactions in those runs. Each run's counts were read" \
        "right before it and again after ${STATS_IDLE_S} s idle (backends flush their statistics at exit, or when idle" \
        "at most once a second, else within 10 s), with no other target running in between; pgscale's health checks" \
        "and these readings use database bench_admin, so they are not counted (autovacuum may add a few)."
    fi
  else
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
  fi
  if [ "$TLS" = 1 ]; then
    echo
    echo "Client TLS: the same pgscale process (tls_mode = \"allow\", ECDSA P-256 certificate), pgbench with" \
      "PGSSLMODE=disable (plain) and PGSSLMODE=require (TLS); the proxy-to-Postgres side is plain in both."
    echo
    echo "| test | clients | TPS plain | TPS TLS | TLS/plain | latency ms plain | latency ms TLS" \
      "| CPU µs/txn plain | CPU µs/txn TLS | failed txns plain / TLS |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    for test in $TESTS; do
      for c in $CLIENTS; do
        p="$WORK/res/pgscale.$test.$c" t="$WORK/res/pgscale-tls.$test.$c"
        pt=$(agg "$p" 2 0) tt=$(agg "$t" 2 0)
        echo "| ${TEST_NAME[$test]} | $c | $pt | $tt | $(ratio "$tt" "$pt") | $(agg "$p" 3 3) | $(agg "$t" 3 3)" \
          "| $(agg "$p" 5 1) | $(agg "$t" 5 1) | $(total_failed "$p") / $(total_failed "$t") |"
      done
    done
  fi
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
