#!/usr/bin/env bash
# One registry of three seaport servers on a three-member etcd, all on this
# machine, for trying seaport's "several servers" mode. Runs in the
# foreground; Ctrl-C (or SIGTERM) stops every process and removes the data.
#
#   examples/cluster.sh                  # seaport from $PATH
#   deno task cluster                    # seaport from this checkout
#
# Environment: SEAPORT (the seaport command, default "seaport"), ETCD (the
# etcd binary, default "etcd"), PORT (seaport servers on PORT, PORT+1 and
# PORT+2; default 9090), ETCD_PORT (member i serves clients on
# ETCD_PORT+10*i and peers on ETCD_PORT+10*i+1; default 2379).
set -euo pipefail

read -ra seaport <<<"${SEAPORT:-seaport}"
etcd=${ETCD:-etcd}
port=${PORT:-9090}
etcd_port=${ETCD_PORT:-2379}
data=$(mktemp -d "${TMPDIR:-/tmp}/seaport-cluster.XXXXXX")
members=()
servers=()

stop() {
  local rc=$1
  trap - INT TERM EXIT
  # the servers first: they free their registrations in etcd as they go
  for group in servers members; do
    local -n list=$group
    if ((${#list[@]} > 0)); then
      kill -TERM "${list[@]}" 2>/dev/null || true
      wait "${list[@]}" 2>/dev/null || true
    fi
  done
  rm -rf "$data"
  echo "cluster stopped"
  exit "$rc"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

# Waits until process $2 listens on 127.0.0.1:$1 (at most 20 s); $3: its log.
listening() {
  for _ in $(seq 200); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "$4 exited before listening on 127.0.0.1:$1" >&2
      [[ -n $3 ]] && tail -n 3 "$3" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

command -v "$etcd" >/dev/null || {
  echo "no etcd binary \"$etcd\" (install etcd-server, or set ETCD)" >&2
  exit 1
}

peers=""
endpoints=""
for i in 0 1 2; do
  peers+="${peers:+,}m$i=http://127.0.0.1:$((etcd_port + 10 * i + 1))"
  endpoints+="${endpoints:+,}http://127.0.0.1:$((etcd_port + 10 * i))"
done
for i in 0 1 2; do
  client=http://127.0.0.1:$((etcd_port + 10 * i))
  peer=http://127.0.0.1:$((etcd_port + 10 * i + 1))
  "$etcd" --name "m$i" --data-dir "$data/m$i" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "$peers" --initial-cluster-state new \
    --initial-cluster-token "seaport-cluster-$$" \
    --logger zap --log-outputs "$data/m$i.log" >/dev/null 2>&1 &
  members+=($!)
done
for i in 0 1 2; do
  listening $((etcd_port + 10 * i)) "${members[i]}" "$data/m$i.log" "etcd member m$i"
done

addresses=""
for i in 0 1 2; do
  "${seaport[@]}" $((port + i)) --host 127.0.0.1 --etcd "$endpoints" &
  servers+=($!)
  addresses+="${addresses:+,}127.0.0.1:$((port + i))"
done
for i in 0 1 2; do
  listening $((port + i)) "${servers[i]}" "" "seaport server $((port + i))"
done
echo "cluster ready: seaport servers $addresses on etcd $endpoints (Ctrl-C stops them)"
wait
