#!/usr/bin/env bash
# pgbench through pgscale vs straight to Postgres vs PgBouncer (if installed), side by side in one run.
# Prints a Markdown table (TPS, latency, ratios, proxy CPU per transaction) and memory per idle client.
#
#   benches/pgbench.sh [--duration S] [--clients "1 16 64"] [--rounds N] [--scale N] [--pool N]
#                      [--idle-clients N] [--out FILE] [--no-pgbouncer] [--workers N (pgscale threads, 0 = cores)]
set -euo pipefail

DURATION=20 CLIENTS="1 16 64" ROUNDS=2 SCALE=10 POOL=20 IDLE=2000 OUT=bench-results.md USE_BOUNCER=1 WORKERS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --pool) POOL=$2; shift 2 ;;
    --idle-clients) IDLE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-pgbouncer) USE_BOUNCER=0; shift ;;
    --workers) WORKERS=$2; shift 2 ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
WORK=$(mktemp -d /tmp/pgscale-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  [ -d "$WORK/data" ] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" && return 0; sleep 0.1; done; echo "nothing answers on $1" >&2; return 1; }
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== starting Postgres"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C -N >/dev/null
PGPORT=$(free_port)
as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -o \
  "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c shared_buffers=256MB" \
  start >/dev/null
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s "$SCALE" -q postgres 2>&1 | tail -1

echo "== starting pgscale"
(cd "$ROOT" && cargo build --release -q)
PSPORT=$(free_port)
cat > "$WORK/pgscale.toml" <<EOF
[listen]
address = "127.0.0.1:$PSPORT"
max_client_conn = 20000
workers = $WORKERS
[pool]
mode = "transaction"
pool_size = $POOL
[[users]]
name = "postgres"
auth = "trust"
[[shards]]
primary = "postgres://127.0.0.1:$PGPORT"
EOF
RUST_LOG=warn "$ROOT/target/release/pgscale" serve --config "$WORK/pgscale.toml" 2>"$WORK/pgscale.log" &
PSPID=$!; PIDS+=("$PSPID")
wait_port "$PSPORT"

BNPORT=""
if [ "$USE_BOUNCER" = 1 ] && command -v pgbouncer >/dev/null; then
  echo "== starting PgBouncer $(pgbouncer --version | head -1)"
  BNPORT=$(free_port)
  echo '"postgres" ""' > "$WORK/userlist.txt"
  cat > "$WORK/pgbouncer.ini" <<EOF
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
max_client_conn = 20000
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
  [ "$(id -u)" = 0 ] && chown postgres "$WORK"/pgbouncer.ini "$WORK"/userlist.txt
  # setpriv, unlike runuser, keeps our open-files limit (2,000 idle clients need more than 1,024).
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    setpriv --reuid=postgres --regid=postgres --init-groups pgbouncer "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
  else
    as_pg pgbouncer "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
  fi
  PIDS+=("$!")
  wait_port "$BNPORT"
  for _ in $(seq 50); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
  BNPID=$(cat "$WORK/pgbouncer.pid")
else
  echo "== PgBouncer not installed (apt-get install -y pgbouncer) or disabled: skipped"
fi

# run TARGET PORT PID CLIENTS ARGS... -> appends "tps lat failed cpu_us" to $WORK/res.TARGET.KEY
run() {
  local target=$1 port=$2 pid=$3 clients=$4 key=$5; shift 5
  local jobs=$(( clients < 2 ? clients : 2 ))
  local before=0 after=0
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  local out
  out=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -T "$DURATION" -c "$clients" -j "$jobs" "$@" postgres 2>&1) || true
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  local tps lat failed txns cpu
  tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
  lat=$(echo "$out" | awk '/latency average/ {print $4; exit}')
  failed=$(echo "$out" | awk '/number of failed/ {print $5; exit}')
  txns=$(echo "$out" | awk '/actually processed/ {split($NF, a, "/"); print a[1]; exit}')
  if [ -z "$tps" ] || [ -z "$txns" ] || [ "$txns" = 0 ]; then
    echo "fails: $(echo "$out" | grep -m1 -i error)" >> "$WORK/errors.log"
    echo "fail fail fail -" >> "$WORK/res.$target.$key"; return
  fi
  cpu="-"
  [ -n "$pid" ] && cpu=$(awk -v a="$before" -v b="$after" -v t="$TICK" -v n="$txns" 'BEGIN {printf "%.1f", (b - a) / t * 1e6 / n}')
  echo "$tps $lat ${failed:-0} $cpu" >> "$WORK/res.$target.$key"
}

TESTS=("select-only simple|-S -M simple" "select-only extended|-S -M extended" "select-only prepared|-S -M prepared" "tpcb-like simple|-M simple")
for round in $(seq "$ROUNDS"); do
  for t in "${TESTS[@]}"; do
    name=${t%%|*}; args=${t#*|}
    for c in $CLIENTS; do
      key="$(echo "$name" | tr ' ' _)_$c"
      echo "== round $round: $name, $c clients"
      # shellcheck disable=SC2086
      run direct "$PGPORT" "" "$c" "$key" $args
      # shellcheck disable=SC2086
      run pgscale "$PSPORT" "$PSPID" "$c" "$key" $args
      # shellcheck disable=SC2086
      [ -n "$BNPORT" ] && run pgbouncer "$BNPORT" "$BNPID" "$c" "$key" $args
    done
  done
done

# mean over rounds of column N ("fail" if any round failed)
mean() { [ -f "$1" ] || { echo "-"; return; }; awk -v c="$2" '{ if ($c == "fail") f = 1; else { s += $c; n++ } } END { if (f) print "fails"; else if (n) printf "%.1f", s / n; else print "-" }' "$1"; }
sumcol() { [ -f "$1" ] || { echo "-"; return; }; awk -v c="$2" '{ if ($c != "fail") s += $c } END { print s + 0 }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }

{
  echo "pgbench -T $DURATION, scale $SCALE, pool_size $POOL, transaction mode, pgscale workers=$WORKERS, $ROUNDS round(s) interleaved; $(nproc) cores"
  echo
  echo "| test | clients | direct TPS | pgscale TPS | PgBouncer TPS | pgscale/direct | pgscale/PgBouncer | latency ms direct / pgscale / PgBouncer | proxy CPU µs/txn pgscale / PgBouncer | failed txns pgscale |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for t in "${TESTS[@]}"; do
    name=${t%%|*}
    for c in $CLIENTS; do
      key="$(echo "$name" | tr ' ' _)_$c"
      d=$(mean "$WORK/res.direct.$key" 1); p=$(mean "$WORK/res.pgscale.$key" 1); b=$(mean "$WORK/res.pgbouncer.$key" 1)
      echo "| $name | $c | $d | $p | $b | $(ratio "$p" "$d") | $(ratio "$p" "$b") | $(mean "$WORK/res.direct.$key" 2) / $(mean "$WORK/res.pgscale.$key" 2) / $(mean "$WORK/res.pgbouncer.$key" 2) | $(mean "$WORK/res.pgscale.$key" 4) / $(mean "$WORK/res.pgbouncer.$key" 4) | $(sumcol "$WORK/res.pgscale.$key" 3) |"
    done
  done
} > "$WORK/table.md"

if [ "$IDLE" -gt 0 ]; then
  echo "== memory with $IDLE idle clients"
  idle_rss() {
    local port=$1 pid=$2 before after
    before=$(rss_kb "$pid")
    coproc IDLERUN { python3 "$ROOT/benches/idle_clients.py" 127.0.0.1 "$port" "$IDLE"; }
    local line=""; read -r -t 300 line <&"${IDLERUN[0]}" || true
    sleep 1
    after=$(rss_kb "$pid")
    local child=${IDLERUN_PID:-}
    [ -n "$child" ] && { kill "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; }
    [ "$line" = "ready $IDLE" ] || { echo "- (idle clients failed: $line)"; return; }
    awk -v a="$before" -v b="$after" -v n="$IDLE" 'BEGIN {printf "%.0f bytes (RSS %d -> %d kB)", (b - a) * 1024 / n, a, b}'
  }
  {
    echo
    echo "Memory per idle client ($IDLE clients that logged in and stay idle; RSS growth / clients):"
    echo "- pgscale: $(idle_rss "$PSPORT" "$PSPID")"
    [ -n "$BNPORT" ] && echo "- PgBouncer: $(idle_rss "$BNPORT" "$BNPID")"
  } >> "$WORK/table.md"
fi

[ -f "$WORK/errors.log" ] && { echo; echo "Runs that failed:"; sed 's/^/- /' "$WORK/errors.log"; } >> "$WORK/table.md"
cp "$WORK/table.md" "$OUT"
echo
cat "$OUT"
