#!/usr/bin/env bash
# The operations walkthrough of docs/operations.md as one script, on one machine:
# bootstrap a 3-member cluster by discovery, scrape /metrics, take a snapshot, restore
# it into a new 3-member cluster, fill the quota and recover.
#
#   bash docs/walkthrough.sh            # in a fresh temporary directory, ports 12379...
#   WORK=/tmp/w BASE_PORT=22379 bash docs/walkthrough.sh
#
# Needs `fastkv` and `fastkvctl` on PATH (pip install .), curl and jq. Every process it
# starts is stopped when it ends. tests/integration/test_walkthrough.py runs it.
set -euo pipefail
WORK=${WORK:-$(mktemp -d)}
P=${BASE_PORT:-12379}
cd "$WORK"
echo "working in $WORK"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_healthy() {   # URL: until /health says true (at most 60 s)
    for _ in $(seq 1 300); do
        curl -sf "$1/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "$1 did not become healthy" >&2
    return 1
}

# -- 1. A discovery service: any etcd or fastkv member with the v2 API on -----------------
fastkv --name disco --data-dir disco.fastkv --enable-v2=true \
    --listen-client-urls http://127.0.0.1:$P --advertise-client-urls http://127.0.0.1:$P \
    --listen-peer-urls http://127.0.0.1:$((P + 1)) \
    --initial-advertise-peer-urls http://127.0.0.1:$((P + 1)) \
    --initial-cluster disco=http://127.0.0.1:$((P + 1)) >disco.log 2>&1 &
pids+=($!)
wait_healthy http://127.0.0.1:$P

# A new token, and the size of the cluster it will bootstrap
TOKEN=$(cat /proc/sys/kernel/random/uuid)
DISCOVERY=http://127.0.0.1:$P/v2/keys/discovery/$TOKEN
curl -sf -X PUT "$DISCOVERY/_config/size" -d value=3 >/dev/null

# -- 2. Three members find each other through it -------------------------------------------
for i in 1 2 3; do
    c=$((P + 10 * i)); p=$((c + 1)); m=$((c + 2))
    fastkv --name m$i --data-dir m$i.fastkv --discovery "$DISCOVERY" \
        --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c \
        --listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \
        --listen-metrics-urls http://127.0.0.1:$m \
        --quota-backend-bytes $((1024 * 1024)) >m$i.log 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_healthy http://127.0.0.1:$((P + 10 * i)); done
EPS=127.0.0.1:$((P + 10)),127.0.0.1:$((P + 20)),127.0.0.1:$((P + 30))
fastkvctl --endpoints=$EPS member list -w table
fastkvctl --endpoints=$EPS put greeting hello
fastkvctl --endpoints=127.0.0.1:$((P + 30)) get greeting

# -- 3. Metrics: Prometheus' text format, on the separate metrics listener -------------------
curl -sf http://127.0.0.1:$((P + 12))/metrics >metrics.txt
grep -E '^etcd_server_(has_leader|is_leader) ' metrics.txt

# -- 4. A snapshot, streamed from one member, and what it holds ------------------------------
fastkvctl --endpoints=127.0.0.1:$((P + 10)) snapshot save backup.db
fastkvctl snapshot status backup.db -w table

# -- 5. A new cluster from the snapshot: one restore per member, then start them ----------------
RESTORED=""
for i in 1 2 3; do RESTORED+="${RESTORED:+,}r$i=http://127.0.0.1:$((P + 40 + 10 * i + 1))"; done
for i in 1 2 3; do
    fastkvctl snapshot restore backup.db --name r$i --data-dir r$i.fastkv \
        --initial-cluster "$RESTORED" --initial-cluster-token restored-cluster \
        --initial-advertise-peer-urls http://127.0.0.1:$((P + 40 + 10 * i + 1))
done
for i in 1 2 3; do
    c=$((P + 40 + 10 * i)); p=$((c + 1))
    fastkv --name r$i --data-dir r$i.fastkv \
        --initial-cluster "$RESTORED" --initial-cluster-token restored-cluster \
        --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c \
        --listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \
        >r$i.log 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_healthy http://127.0.0.1:$((P + 40 + 10 * i)); done
REPS=127.0.0.1:$((P + 50)),127.0.0.1:$((P + 60)),127.0.0.1:$((P + 70))
fastkvctl --endpoints=$REPS member list -w table
test "$(fastkvctl --endpoints=$REPS get greeting --print-value-only)" = hello

# -- 6. The quota: fill it, see the alarm, and recover ----------------------------------------
big=$(head -c 65536 /dev/zero | tr '\0' x)
for i in $(seq 1 200); do
    if ! fastkvctl --endpoints=$EPS put big$((i % 4)) "$big" >/dev/null 2>quota.err; then
        break
    fi
done
cat quota.err                                   # etcdserver: mvcc: database space exceeded
grep -q "database space exceeded" quota.err
fastkvctl --endpoints=$EPS alarm list           # memberID:... alarm:NOSPACE
curl -s http://127.0.0.1:$((P + 10))/health; echo   # {"health":"false"}
rev=$(fastkvctl --endpoints=$EPS endpoint status -w json | jq '.[0].Status.header.revision')
fastkvctl --endpoints=$EPS compaction "$rev"
fastkvctl --endpoints=$EPS defrag --cluster
fastkvctl --endpoints=$EPS alarm disarm
fastkvctl --endpoints=$EPS put after-the-alarm ok
fastkvctl --endpoints=$EPS endpoint status -w table
echo "walkthrough done"
