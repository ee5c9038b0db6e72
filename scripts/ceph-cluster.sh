#!/usr/bin/env bash
# A throwaway single-node Ceph cluster for tests and benchmarks: one ceph-mon and one ceph-osd
# (memstore) on 127.0.0.1 (or CEPH_PUBLIC_ADDR), everything (config, data, logs, sockets, pids, keys) under <dir>, cephx
# (or auth none), no mgr. Writes <dir>/ceph.conf, which names the admin keyring <dir>/keyring, so
# every client that reads it (ceph, rados, rbd, fio, qemu, our blocker) connects as client.admin;
# creates the pools "blocks", "maps" and "rbd".
#
#   scripts/ceph-cluster.sh start  <dir>   start (idempotent: a running cluster is left alone)
#   scripts/ceph-cluster.sh stop   <dir>   stop both daemons (idempotent), keep <dir>
#   scripts/ceph-cluster.sh status <dir>   exit 0 when the cluster answers, 1 otherwise
#   scripts/ceph-cluster.sh restart-osd <dir>   graceful OSD restart (memstore saves on shutdown)
#   scripts/ceph-cluster.sh purge  <dir>   stop and remove <dir>
#
# Concurrent callers are serialized with flock on <dir>/.lock, so many test files may call start.
# Environment: CEPH_POOLS (default "blocks maps rbd"), CEPH_MEMSTORE_BYTES (default 8 GiB),
# CEPH_AUTH (cephx, the default, or none; read when the cluster is created), CEPH_PUBLIC_ADDR (the
# IPv4 address the monitor and the OSD listen on and advertise, default 127.0.0.1; read when the
# cluster is created: an address of the root namespace's side of a veth pair or bridge lets
# network namespaces reach the cluster, see test-e2e/lib/hosts.ts; starting an existing cluster
# with a different CEPH_PUBLIC_ADDR fails).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|status|restart-osd|purge <dir>" >&2
  exit 2
fi

missing=()
for b in ceph-mon ceph-osd ceph monmaptool ceph-authtool; do command -v "$b" >/dev/null || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ceph-cluster: missing ${missing[*]}: install the Debian packages ceph-mon ceph-osd ceph-common librados-dev" >&2
  exit 3
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/ceph.conf"
pools=${CEPH_POOLS:-"blocks maps rbd"}
auth=${CEPH_AUTH:-cephx}
case "$auth" in
  cephx | none) ;;
  *)
    echo "ceph-cluster: CEPH_AUTH must be cephx or none, not '$auth'" >&2
    exit 2
    ;;
esac
addr=${CEPH_PUBLIC_ADDR:-127.0.0.1}
if ! [[ "$addr" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
  echo "ceph-cluster: CEPH_PUBLIC_ADDR must be an IPv4 address, not '$addr'" >&2
  exit 2
fi

exec 9>"$dir/.lock"
flock 9

ceph_q() { timeout 20 ceph -c "$conf" --connect-timeout 10 "$@"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() { # pidfile
  local pf=$1 pid
  [ -f "$pf" ] || return 0
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pf"
}

free_port() {
  python3 - "$addr" <<'PY'
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1]); s.close()
PY
}

write_conf() {
  local port=$1 fsid=$2
  cat >"$conf" <<CONF
[global]
fsid = $fsid
mon_host = v2:$addr:$port
public_addr = $addr
cluster_addr = $addr
ms_bind_msgr1 = false
auth_cluster_required = $auth
auth_service_required = $auth
auth_client_required = $auth
keyring = $dir/keyring
run_dir = $dir
admin_socket = $dir/\$name.asok
pid_file = $dir/\$name.pid
log_file = $dir/\$name.log
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
mon_osd_down_out_interval = 0
osd_objectstore = memstore
memstore_device_bytes = ${CEPH_MEMSTORE_BYTES:-8589934592}
osd_max_object_name_len = 460
osd_max_object_namespace_len = 64

[mon]
mon_data = $dir/mon.\$id

[osd]
osd_data = $dir/osd.\$id
keyring = $dir/osd.\$id/keyring
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 2
# memstore keeps everything in memory and writes it to osd_data only on a clean umount, which the
# default fast shutdown skips: without this an OSD restart would lose every object.
osd_fast_shutdown = false
CONF
}

status() {
  pid_alive "$dir/mon.a.pid" && pid_alive "$dir/osd.0.pid" &&
    ceph_q osd dump 2>/dev/null | grep -q '^osd.0 up'
}

wait_osd_up() {
  for _ in $(seq 1 300); do
    if ceph_q osd dump 2>/dev/null | grep -q '^osd.0 up'; then return 0; fi
    sleep 0.1
  done
  echo "ceph-cluster: osd.0 did not come up; see $dir/osd.0.log" >&2
  return 1
}

start_osd() {
  ceph-osd -c "$conf" -i 0 9>&- # the daemons must not inherit the flock
  wait_osd_up
}

start() {
  if [ -f "$dir/.created" ] && [ -n "${CEPH_PUBLIC_ADDR:-}" ]; then
    local was
    was=$(sed -n 's/^public_addr = //p' "$conf")
    if [ "$was" != "$addr" ]; then
      echo "ceph-cluster: the cluster in $dir listens on $was, not CEPH_PUBLIC_ADDR=$addr (purge it first)" >&2
      exit 2
    fi
  fi
  if status; then return 0; fi
  stop_daemon "$dir/osd.0.pid"
  stop_daemon "$dir/mon.a.pid"
  if [ ! -f "$dir/.created" ]; then
    rm -rf "$dir/mon.a" "$dir/osd.0" "$dir/monmap"
    local port fsid
    port=$(free_port)
    fsid=$(cat /proc/sys/kernel/random/uuid)
    write_conf "$port" "$fsid"
    # One keyring for the monitor and client.admin (the OSD makes its own key below). With auth
    # none nobody checks the keys, but having them keeps the two modes one code path.
    rm -f "$dir/keyring"
    ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$dir/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
      --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    chmod 600 "$dir/keyring"
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:$addr:$port]" "$dir/monmap" >/dev/null
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" >/dev/null 9>&-
    ceph-mon -c "$conf" -i a 9>&-
    local osd_uuid
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    mkdir -p "$dir/osd.0"
    ceph-authtool --create-keyring "$dir/osd.0/keyring" --gen-key -n osd.0 >/dev/null
    ceph_q osd new "$osd_uuid" 0 >/dev/null
    ceph_q auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
      -i "$dir/osd.0/keyring" >/dev/null 2>&1
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1 9>&-
    start_osd
    for p in $pools; do
      ceph_q osd pool create "$p" 8 8 >/dev/null 2>&1
      if [ "$p" = rbd ]; then app=rbd; else app=rados; fi
      ceph_q osd pool application enable "$p" "$app" >/dev/null 2>&1
    done
    touch "$dir/.created"
  else
    ceph-mon -c "$conf" -i a 9>&-
    start_osd
  fi
}

case "$cmd" in
  start)
    t0=$(date +%s.%N)
    start
    echo "ceph cluster up in $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?')s: CEPH_CONF=$conf"
    ;;
  stop)
    stop_daemon "$dir/osd.0.pid"
    stop_daemon "$dir/mon.a.pid"
    ;;
  status)
    if status; then echo "running: CEPH_CONF=$conf"; else echo "not running"; exit 1; fi
    ;;
  restart-osd)
    stop_daemon "$dir/osd.0.pid"
    start_osd
    ;;
  purge)
    stop_daemon "$dir/osd.0.pid"
    stop_daemon "$dir/mon.a.pid"
    exec 9>&-
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|status|restart-osd|purge <dir>" >&2
    exit 2
    ;;
esac
