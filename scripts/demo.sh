#!/usr/bin/env bash
# Glow demo: three nodes of user alice in network namespaces on one bridged
# LAN (no Internet, no --peer). n1 creates the user, n2 and n3 join with an
# invite each; then `glow status` and pings over the overlay addresses.
# Everything (namespaces, daemons, state) is removed on exit. Needs root.
#
#   sudo ./scripts/demo.sh            (or: sudo make demo)
#   KEEP=1 sudo ./scripts/demo.sh     wait for Enter before cleaning up
#   GLOW_BIN=/path/to/glow ...        use a prebuilt binary
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "demo.sh: needs root (it creates network namespaces)" >&2
	exit 1
fi

P="gd-$$-"                      # namespace prefix of this run
WORK=$(mktemp -d /tmp/glow-demo-XXXXXX)
GLOW="$WORK/glow"
NODES="n1 n2 n3"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { echo "+ $*"; "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }

cleanup() {
	set +e
	say "cleaning up"
	for n in $NODES; do
		if [ -e "/run/netns/$P$n" ]; then
			timeout 10 ip netns exec "$P$n" "$GLOW" down --state "$WORK/$n" >/dev/null 2>&1
		fi
	done
	for ns in $NODES lan; do
		if [ -e "/run/netns/$P$ns" ]; then
			for pid in $(ip netns pids "$P$ns"); do kill -9 "$pid" 2>/dev/null; done
			ip netns del "$P$ns"
		fi
		rm -rf "/etc/netns/$P$ns"
	done
	rm -rf "$WORK"
	echo "done"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of earlier demo runs whose shell is gone.
for f in /run/netns/gd-*; do
	[ -e "$f" ] || continue
	ns=${f#/run/netns/}
	pid=${ns#gd-}; pid=${pid%%-*}
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "removing leftover namespace $ns"
		for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done
		ip netns del "$ns" || true
		rm -rf "/etc/netns/$ns"
	fi
done

if [ -n "${GLOW_BIN:-}" ]; then
	say "using $GLOW_BIN"
	cp "$GLOW_BIN" "$GLOW"
else
	say "building glow"
	run go build -o "$GLOW" ./cmd/glow
fi

say "one LAN (bridge br0 in namespace ${P}lan), three hosts 10.77.0.11-13"
ip netns add "${P}lan"
in_ns lan ip link set lo up
in_ns lan ip link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
in_ns lan ip link set br0 up
i=0
for n in $NODES; do
	i=$((i + 1))
	ip netns add "$P$n"
	# Own resolv.conf, so nothing in the namespace touches the machine's.
	mkdir -p "/etc/netns/$P$n" && echo "# glow demo" >"/etc/netns/$P$n/resolv.conf"
	in_ns "$n" ip link set lo up
	in_ns "$n" sysctl -q -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
	in_ns "$n" ip link add eth0 type veth peer name "p$i" netns "${P}lan"
	in_ns lan ip link set "p$i" master br0 up
	in_ns "$n" ip addr add "10.77.0.1$i/24" dev eth0
	in_ns "$n" ip addr add "fd77::1$i/64" dev eth0 nodad
	in_ns "$n" ip link set eth0 up
	mkdir -m 700 "$WORK/$n"
	echo "$n: 10.77.0.1$i fd77::1$i"
done

glow() { local n=$1; shift; local cmd=$1; shift; in_ns "$n" "$GLOW" "$cmd" --state "$WORK/$n" "$@"; }

say "n1: glow up --user alice --name n1"
glow n1 up --no-dns --user alice --name n1
for n in n2 n3; do
	say "n1: glow invite (one code per device)"
	code=$(glow n1 invite | tail -n 1)
	echo "$code"
	say "$n: glow up --name $n --join CODE"
	glow "$n" up --no-dns --name "$n" --join "$code"
done

declare -A V4 V6
for n in $NODES; do
	addrs=($(glow "$n" ip))
	V4[$n]=${addrs[0]}
	V6[$n]=${addrs[1]:-}
done

say "waiting for the peers to see each other (at most 30 s)"
for try in $(seq 1 60); do
	ok=1
	for from in $NODES; do for to in $NODES; do
		[ "$from" = "$to" ] && continue
		in_ns "$from" ping -n -c1 -W1 "${V4[$to]}" >/dev/null 2>&1 || ok=0
	done; done
	[ $ok = 1 ] && break
	sleep 0.5
done

for n in $NODES; do
	say "$n: glow status"
	glow "$n" status || true
done

say "pings over the overlay addresses"
fail=0
for from in $NODES; do
	for to in $NODES; do
		[ "$from" = "$to" ] && continue
		for a in "${V4[$to]}" "${V6[$to]}"; do
			[ -n "$a" ] || continue
			if out=$(in_ns "$from" ping -n -c1 -W2 "$a" 2>&1); then
				echo "$from -> $to $a: $(echo "$out" | grep -o 'time=[0-9.]* ms')"
			else
				echo "$from -> $to $a: NO REPLY"
				fail=1
			fi
		done
	done
done

say "n1: glow ping n2 -c 3"
glow n1 ping n2 -c 3 || fail=1

if [ -n "${KEEP:-}" ]; then
	say "KEEP set: try e.g.  ip netns exec ${P}n1 $GLOW status --state $WORK/n1"
	read -r -p "press Enter to clean up " _
fi
[ $fail = 0 ] && say "demo ok" || say "demo: some pings failed"
exit $fail
