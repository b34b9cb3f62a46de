#!/usr/bin/env bash
# Glow demo: the whole story, in network namespaces on this machine, with
# the commands a user types (lines "HOST$ ..."; GLOW_STATE tells each glow
# command its node's state directory, and `ssh`/`scp` use a throwaway key).
#
#   the Internet   198.51.100.0/24: vps .10, pc (bob's server) .20
#   alice's home   nas 10.77.1.10, desktop .11 behind home-gw (easy NAT, .2 outside)
#   a cafe         laptop 10.77.2.10 behind cafe-gw (hard NAT: MASQUERADE --random-fully, .3)
#
# 1. the NAS creates user alice, the desktop joins on the LAN; 2. the VPS
# joins from a NAS code (it cannot reach the NAS: the NAS runs the `glow
# link add` line the VPS prints); 3. the laptop joins from the cafe through
# the VPS; 4. `glow status`: direct and relayed paths; 5. `ssh nas` from the
# cafe, by name, and a file copied with scp; 6. bob becomes a friend, the NAS
# shares one web server with him, and takes it back; 7. the live map
# (`glow web`) of the NAS, served on this machine's loopback.
# Everything (namespaces, daemons, files) is removed on exit. Needs root.
#
#   sudo ./scripts/demo.sh            (or: sudo make demo)
#   KEEP=1 sudo ./scripts/demo.sh     keep it up (open the map) until Enter
#   GLOW_BIN=/path/to/glow ...        use a prebuilt binary
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "demo.sh: needs root (it creates network namespaces)" >&2
	exit 1
fi
for tool in ip iptables sshd ssh-keygen python3 curl sha256sum; do
	command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
		echo "demo.sh: $tool is missing (apt-get install iproute2 iptables openssh-server openssh-client python3 curl)" >&2
		exit 1
	}
done

P="gd-$$-" # namespace prefix of this run
WORK=$(mktemp -d /tmp/glow-demo-XXXXXX)
chmod 755 "$WORK"
NODES="nas desktop vps laptop pc"
NSS="inet home-gw cafe-gw $NODES"
START=$(date +%s)
WEBPID=

if [ -t 1 ]; then B=$'\033[1m' C=$'\033[36m' N=$'\033[0m'; else B= C= N=; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
# in_ns HOST CMD...: run in HOST's namespace, with glow and the ssh
# wrappers first in PATH and HOST's state directory as GLOW_STATE.
in_ns() {
	local h=$1
	shift
	ip netns exec "$P$h" env GLOW_STATE="$WORK/$h" PATH="$WORK/bin:$PATH" "$@"
}
# as HOST CMD...: show the command as HOST's prompt, then run it there.
as() {
	local h=$1
	shift
	printf '%s%s$%s %s\n' "$C" "$h" "$N" "$*" >&2
	in_ns "$h" "$@"
}

cleanup() {
	set +e
	say "cleaning up"
	[ -n "$WEBPID" ] && kill "$WEBPID" 2>/dev/null
	for n in $NODES; do
		[ -e "/run/netns/$P$n" ] && timeout 10 ip netns exec "$P$n" "$WORK/bin/glow" down --state "$WORK/$n" >/dev/null 2>&1
	done
	for ns in $NSS; do
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
	pid=${ns#gd-}
	pid=${pid%%-*}
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "removing leftover namespace $ns"
		for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done
		ip netns del "$ns" || true
		rm -rf "/etc/netns/$ns"
	fi
done

mkdir -p "$WORK/bin"
if [ -n "${GLOW_BIN:-}" ]; then
	say "using $GLOW_BIN"
	cp "$GLOW_BIN" "$WORK/bin/glow"
else
	say "building glow"
	go build -o "$WORK/bin/glow" ./cmd/glow
fi

# ---- the networks (not part of the story: printed as a summary) ----

mkns() {
	ip netns add "$P$1"
	# Own resolv.conf, so nothing in the namespace touches the machine's.
	mkdir -p "/etc/netns/$P$1" && echo "# glow demo $1" >"/etc/netns/$P$1/resolv.conf"
	ip -n "$P$1" link set lo up
	ip netns exec "$P$1" sysctl -q -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
}
bridge() { ip -n "$P$1" link add "$2" type bridge stp_state 0 forward_delay 0 mcast_snooping 0; }
# plug HOST IFACE BRIDGE_NS BRIDGE ADDR/LEN: a veth from HOST into a bridge.
plug() {
	ip -n "$P$1" link add "$2" type veth peer name "v-$1" netns "$P$3"
	ip -n "$P$3" link set "v-$1" master "$4" up
	ip -n "$P$1" addr add "$5" dev "$2"
	ip -n "$P$1" link set "$2" up
}
# router NAME LAN(a.b.c) WAN_ADDR easy|hard: the LAN is a bridge in the
# router (lan0, .1); IPv4 NAT to the Internet; nothing unsolicited comes
# in, forwarded or to the router itself, as home routers do.
router() {
	local r=$1 lan=$2 wan=$3 nat=$4
	mkns "$r"
	bridge "$r" lan0
	ip -n "$P$r" addr add "$lan.1/24" dev lan0
	ip -n "$P$r" link set lan0 up
	plug "$r" wan0 inet br0 "$wan/24"
	ip netns exec "$P$r" sysctl -q -w net.ipv4.ip_forward=1
	local ipt="ip netns exec $P$r iptables -w 5"
	if [ "$nat" = hard ]; then
		$ipt -t nat -A POSTROUTING -o wan0 -j MASQUERADE --random-fully
	else
		$ipt -t nat -A POSTROUTING -o wan0 -j MASQUERADE
	fi
	$ipt -A FORWARD -i wan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
	$ipt -A FORWARD -i wan0 -j DROP
	$ipt -A INPUT -i wan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
	$ipt -A INPUT -i wan0 -j DROP
}
# lanhost NAME ROUTER ADDR: a host on the router's LAN.
lanhost() {
	mkns "$1"
	plug "$1" eth0 "$2" lan0 "$3/24"
	ip -n "$P$1" route add default via "${3%.*}.1"
}

say "the networks: the Internet, alice's home (easy NAT), a cafe (hard NAT)"
mkns inet
bridge inet br0
ip -n "${P}inet" link set br0 up
router home-gw 10.77.1 198.51.100.2 easy
router cafe-gw 10.77.2 198.51.100.3 hard
lanhost nas home-gw 10.77.1.10
lanhost desktop home-gw 10.77.1.11
lanhost laptop cafe-gw 10.77.2.10
for h in vps:10 pc:20; do
	mkns "${h%:*}"
	plug "${h%:*}" eth0 inet br0 "198.51.100.${h#*:}/24"
done
for n in $NODES; do mkdir -m 700 "$WORK/$n"; done
echo "home: nas 10.77.1.10, desktop 10.77.1.11 behind 198.51.100.2 (easy NAT)"
echo "cafe: laptop 10.77.2.10 behind 198.51.100.3 (hard NAT: a new public port per destination)"
echo "public: vps 198.51.100.10, pc (bob's server) 198.51.100.20"

# The NAS's services: sshd with a throwaway key, a web server for bob.
mkdir -p /run/sshd "$WORK/ssh" "$WORK/nas-files" "$WORK/nas-share" "$WORK/laptop-files"
ssh-keygen -q -t ed25519 -N "" -C glow-demo-host -f "$WORK/ssh/host_key"
ssh-keygen -q -t ed25519 -N "" -C glow-demo-client -f "$WORK/ssh/client_key"
cp "$WORK/ssh/client_key.pub" "$WORK/ssh/authorized_keys"
cat >"$WORK/ssh/sshd_config" <<EOF
ListenAddress 0.0.0.0:22
HostKey $WORK/ssh/host_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile none
AuthorizedKeysFile $WORK/ssh/authorized_keys
Subsystem sftp internal-sftp
SetEnv DEMO_HOST=nas
EOF
cat >"$WORK/ssh/config" <<EOF
Host *
  IdentityFile $WORK/ssh/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  LogLevel ERROR
  ConnectTimeout 10
EOF
for c in ssh scp; do printf '#!/bin/sh\nexec /usr/bin/%s -F %s "$@"\n' "$c" "$WORK/ssh/config" >"$WORK/bin/$c"; done
chmod 755 "$WORK/bin/ssh" "$WORK/bin/scp"
in_ns nas /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" >"$WORK/sshd.log" 2>&1 &
echo "hello bob, from alice's nas" >"$WORK/nas-share/hello.txt"
in_ns nas python3 -m http.server 8080 --bind 0.0.0.0 --directory "$WORK/nas-share" >"$WORK/http.log" 2>&1 &

# wait_path HOST PEER WHAT: until HOST's `glow status` line for PEER has
# WHAT in its path column (at most 30 s).
wait_path() {
	local i line
	for i in $(seq 1 60); do
		line=$(in_ns "$1" glow status 2>/dev/null | awk -v p="$2" '$1 == p' || true)
		case "$line" in *"$3"*) return 0 ;; esac
		sleep 0.5
	done
	echo "demo: $1 never saw $2 with path '$3' (last: $line)" >&2
	return 1
}
# code HOST ARGS: the code glow invite (or friend invite) prints last.
code() { as "$@" | tail -n 1; }

# ---- the story ----

say "1. At home: the NAS creates user alice, the desktop joins over the LAN"
as nas glow up --no-dns --user alice --name nas
c=$(code nas glow invite)
echo "$c"
as desktop glow up --no-dns --name desktop --join "$c"

say "2. The VPS joins from a NAS code; it cannot reach the NAS behind the home router"
c=$(code nas glow invite)
echo "$c"
printf '%svps$%s glow up --no-dns --name vps --join %s\n' "$C" "$N" "$c"
in_ns vps glow up --no-dns --name vps --join "$c" >"$WORK/vps-up.out" 2>&1 &
vpsup=$!
hint=
for i in $(seq 1 100); do
	hint=$(grep -o 'glow link add udp://198\.51\.100\.10:[0-9]*' "$WORK/vps-up.out" | head -n 1 || true)
	[ -n "$hint" ] && break
	sleep 0.2
done
cat "$WORK/vps-up.out"
[ -n "$hint" ] || { echo "demo: the VPS printed no 'glow link add' line" >&2; exit 1; }
echo "(the NAS runs the line the VPS printed)"
as nas $hint
wait "$vpsup" || { cat "$WORK/vps-up.out"; echo "demo: the VPS did not join" >&2; exit 1; }
sed -n '/glow is up/,$p' "$WORK/vps-up.out"

say "3. From a cafe, behind a hard NAT, the laptop joins through the VPS (MagicDNS on)"
c=$(code nas glow invite)
echo "$c"
as laptop glow up --name laptop --join "$c"

say "4. Paths: the laptop reaches the VPS directly, the home through the VPS"
wait_path laptop vps direct
wait_path laptop nas "relay via vps"
wait_path laptop desktop "relay via vps"
wait_path nas desktop direct
as laptop glow status
as nas glow status
as laptop glow ping nas -c 2

say "5. ssh to the NAS from the cafe, by name; a file copied"
as laptop ssh nas 'echo "logged in to $DEMO_HOST as $(whoami)"'
head -c 2000000 /dev/urandom >"$WORK/laptop-files/photos.tar"
as laptop scp "$WORK/laptop-files/photos.tar" "nas:$WORK/nas-files/"
a=$(sha256sum <"$WORK/laptop-files/photos.tar")
b=$(sha256sum <"$WORK/nas-files/photos.tar")
[ "$a" = "$b" ] || { echo "demo: the copy differs" >&2; exit 1; }
echo "photos.tar copied: sha256 ${a%% *} on both ends"

say "6. A friend: bob (his server pc) and alice; the NAS shares its web server with him"
as pc glow up --user bob --name pc
c=$(code pc glow friend invite)
echo "$c"
as nas glow friend add "$c"
echo "(on the NAS: python3 -m http.server 8080)"
as nas glow share nas:8080 --with bob
ok=
for i in $(seq 1 20); do
	if out=$(in_ns pc curl -sS --max-time 3 http://nas.alice.glow:8080/hello.txt 2>&1); then ok=1; break; fi
	sleep 0.5
done
printf '%spc$%s curl http://nas.alice.glow:8080/hello.txt\n%s\n' "$C" "$N" "$out"
[ -n "$ok" ] || { echo "demo: bob cannot reach the shared web server" >&2; exit 1; }
printf '%spc$%s ssh nas.alice.glow   (not shared: does port 22 answer?)\n' "$C" "$N"
if in_ns pc timeout 3 bash -c '</dev/tcp/nas.alice.glow/22' 2>/dev/null; then
	echo "demo: bob reached the NAS's ssh port, which is not shared" >&2
	exit 1
fi
echo "refused (not shared)"
as nas glow unshare nas:8080 --with bob
printf '%spc$%s curl http://nas.alice.glow:8080/hello.txt\n' "$C" "$N"
if out=$(in_ns pc curl -sS --max-time 3 http://nas.alice.glow:8080/hello.txt 2>&1); then
	echo "$out"
	echo "demo: bob still reaches the web server after unshare" >&2
	exit 1
fi
echo "$out"
echo "refused after unshare"

say "7. The map: glow web (on this machine's loopback; it talks to the NAS's daemon over its socket)"
echo "${C}nas\$${N} glow web"
GLOW_STATE="$WORK/nas" "$WORK/bin/glow" web --listen 127.0.0.1:0 >"$WORK/web.out" 2>&1 &
WEBPID=$!
url=
for i in $(seq 1 50); do
	url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/?token=[A-Za-z0-9_-]*' "$WORK/web.out" || true)
	[ -n "$url" ] && break
	sleep 0.1
done
[ -n "$url" ] || { cat "$WORK/web.out"; echo "demo: glow web printed no URL" >&2; exit 1; }
echo "the map of the NAS: $url"
# What the page shows, from the JSON it is fed (GET /api/status with the token).
summary=$(curl -sS --max-time 5 "${url%%/\?*}/api/status?${url#*\?}" | python3 -c '
import json, sys
st = json.load(sys.stdin)["status"]
for p in st["peers"]:
    name = p["name"] if p["user"] == st["self"]["user"] else p["name"] + "." + p["user"]
    path = "relay via " + ",".join(p["via"]) if p["path"] == "relay" else p["path"]
    print("  %s: %s" % (name, path))
')
echo "the map shows, around the NAS:"
echo "$summary"
case "$summary" in *"laptop: relay via vps"*"pc.bob: direct"*) echo "(the laptop relayed via the VPS, bob's pc a friend's node: ok)" ;; *)
	echo "demo: the map does not show the laptop relayed via the VPS and bob's pc" >&2
	exit 1
	;;
esac

say "demo ok in $(($(date +%s) - START)) s"
if [ -n "${KEEP:-}" ]; then
	echo "Open $url in a browser on this machine. Also try e.g.:"
	echo "  ip netns exec ${P}laptop env GLOW_STATE=$WORK/laptop PATH=$WORK/bin:\$PATH bash"
	read -r -p "press Enter to clean up " _ || true
fi
