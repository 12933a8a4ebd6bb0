#!/usr/bin/env bash
# Fan-out cost: the same key-less count (and a keyed lookup) through pgscale over 3 shards vs over 1
# shard, on the demo's sample schema, measured with pgbench side by side. Prints a Markdown table.
#
# usage: benches/fanout.sh [options]
#   --rows N          users loaded (default 100000), through pgscale's COPY split
#   --duration SECS   length of each pgbench run (default 10)
#   --clients N       pgbench clients (default 4)
#   --rounds N        interleaved rounds: 1 shard, 3 shards, 1 shard, ... (default 2)
#   --no-build        use the existing target/release/pgscale
#   -h, --help        this text
# environment: PG_BIN (default /usr/lib/postgresql/15/bin), PGSCALE_BIN (default target/release/pgscale)
set -euo pipefail

usage() { sed -n '/^# usage:/,/^# environment:/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "fanout.sh: error: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

ROWS=100000 DURATION=10 CLIENTS=4 ROUNDS=2 BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

cd "$(dirname "$0")/.."
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGSCALE_BIN=${PGSCALE_BIN:-target/release/pgscale}
[ "$BUILD" = 1 ] && cargo build --release --quiet
[ -x "$PGSCALE_BIN" ] || die "no $PGSCALE_BIN (build it or drop --no-build)"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts `pgscale demo --shards N` on PORT (in this shell, so cleanup can stop it) and waits
# until it is up; its DATABASE_URL is then in $WORK/demo-N.out.
start_demo() {
  local shards=$1 port=$2 out="$WORK/demo-$1.out"
  "$PGSCALE_BIN" demo --shards "$shards" --port "$port" >"$out" 2>"$WORK/demo-$1.err" &
  PIDS+=($!)
  for _ in $(seq 1 120); do
    if grep -q 'is running' "$out" 2>/dev/null; then
      return
    fi
    sleep 0.5
  done
  cat "$WORK/demo-$1.err" >&2
  die "demo --shards $shards did not start"
}
demo_url() { sed -n 's/^DATABASE_URL=//p' "$WORK/demo-$1.out"; }

say "starting the 1-shard and 3-shard demos"
start_demo 1 6501
start_demo 3 6503
URL1=$(demo_url 1)
URL3=$(demo_url 3)

seq 1 "$ROWS" | awk '{ printf "%d\tuser %d\n", $1, $1 }' >"$WORK/users.tsv"
for url in "$URL1" "$URL3"; do
  "$PG_BIN/psql" "$url" -q -v ON_ERROR_STOP=1 -c "\\copy users (id, name) from '$WORK/users.tsv'"
done
say "loaded $ROWS users into each (COPY through pgscale)"

echo 'select count(*) from users;' >"$WORK/count.sql"
printf '\\set id random(1, %d)\nselect name from users where id = :id;\n' "$ROWS" >"$WORK/keyed.sql"

# Runs one pgbench; prints "tps latency_ms".
run() {
  local url=$1 script=$2 out
  out=$("$PG_BIN/pgbench" -n -M extended -c "$CLIENTS" -j 2 -T "$DURATION" -f "$script" "$url" 2>&1) ||
    { echo "$out" >&2; die "pgbench failed"; }
  local tps lat failed
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  echo "$tps $lat ${failed:-0}"
}

declare -A TPS LAT FAIL
for round in $(seq 1 "$ROUNDS"); do
  for test in count keyed; do
    for shards in 1 3; do
      url=$URL1; [ "$shards" = 3 ] && url=$URL3
      read -r tps lat failed < <(run "$url" "$WORK/$test.sql")
      say "round $round: $test over $shards shard(s): $tps tps, $lat ms, $failed failed"
      TPS[$test,$shards]="${TPS[$test,$shards]:-} $tps"
      LAT[$test,$shards]="${LAT[$test,$shards]:-} $lat"
      FAIL[$test,$shards]=$(( ${FAIL[$test,$shards]:-0} + failed ))
    done
  done
done

mean() { tr ' ' '\n' <<<"$1" | awk 'NF { s += $1; n++ } END { printf "%.2f", s / n }'; }
echo
echo "| query ($ROWS users, $CLIENTS clients) | 1 shard: TPS / latency ms | 3 shards: TPS / latency ms | latency 3 / 1 | failed |"
echo "|---|---|---|---|---|"
for test in count keyed; do
  t1=$(mean "${TPS[$test,1]}") l1=$(mean "${LAT[$test,1]}")
  t3=$(mean "${TPS[$test,3]}") l3=$(mean "${LAT[$test,3]}")
  ratio=$(awk -v a="$l3" -v b="$l1" 'BEGIN { printf "%.2f", a / b }')
  name="select count(*) from users"
  [ "$test" = keyed ] && name="select name from users where id = \$1"
  echo "| \`$name\` | $t1 / $l1 | $t3 / $l3 | $ratio | $(( FAIL[$test,1] + FAIL[$test,3] )) |"
done
