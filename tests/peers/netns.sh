#!/usr/bin/env bash
# Network namespaces for the interop tests (needs root / CAP_NET_ADMIN).
#
#   netns.sh create NAME [--veth]   namespace with lo up; --veth adds a veth pair veth0<->veth1
#                                   inside it, veth0 = 127.0.0.2/32 (Janus skips loopback
#                                   interfaces, so it is given veth0). Prints "NETNS NAME".
#   netns.sh exec NAME CMD [ARGS...] run CMD inside NAME (exits with CMD's exit code)
#   netns.sh loss NAME IFACE PERCENT random loss of UDP packets arriving on IFACE inside NAME
#                                   (nftables numgen, 0.01 % steps; 0 removes it). TCP (the
#                                   WHIP/HTTP signalling) is left alone. Dropped on ingress, so
#                                   the sender sees no error, as with real loss.
#   netns.sh rate NAME IFACE RATE   bandwidth cap on IFACE (tc tbf, e.g. 1mbit; "off" removes it)
#   netns.sh netem NAME IFACE ARGS... tc netem (delay, loss, ...) if the kernel has sch_netem
#                                   ("off" removes it); exit 3 if it has not (this CI's has not)
#   netns.sh delete NAME            remove NAME (and its veths); no error if absent
#
# Loopback traffic inside a namespace goes through its own `lo`, so `loss NAME lo 5` drops 5 %
# of the UDP packets between processes in NAME, each direction independently.
# Exit codes: 0 ok, 1 create: NAME exists, 2 usage error, 3 kernel feature missing,
# other: the failing ip/tc/nft command's code.
set -euo pipefail

die() { echo "netns.sh: $*" >&2; exit 2; }
need_name() {
    [ -n "${1:-}" ] || die "missing namespace name"
    [[ "$1" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "bad namespace name: $1"
}
need_iface() {
    [ -n "${1:-}" ] || die "missing interface"
    [[ "$1" =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || die "bad interface name: $1"
}
exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

cmd="${1:-}"; shift || true
case "$cmd" in
create)
    need_name "${1:-}"; name="$1"; shift
    veth=0
    for a in "$@"; do
        case "$a" in --veth) veth=1 ;; *) die "unknown option: $a" ;; esac
    done
    if exists "$name"; then echo "netns.sh: namespace $name already exists" >&2; exit 1; fi
    ip netns add "$name"
    ip -n "$name" link set lo up
    if [ "$veth" = 1 ]; then
        ip -n "$name" link add veth0 type veth peer name veth1
        ip -n "$name" addr add 127.0.0.2/32 dev veth0
        ip -n "$name" link set veth1 up
        ip -n "$name" link set veth0 up
    fi
    echo "NETNS $name"
    ;;
exec)
    need_name "${1:-}"; name="$1"; shift
    [ "$#" -gt 0 ] || die "exec: missing command"
    exec ip netns exec "$name" "$@"
    ;;
loss)
    need_name "${1:-}"; name="$1"; need_iface "${2:-}"; iface="$2"; pct="${3:-}"
    [ -n "$pct" ] || die "usage: loss NAME IFACE PERCENT"
    [[ "$pct" =~ ^[0-9]+(\.[0-9]{1,2})?$ ]] || die "bad percent: $pct"
    per10k=$(awk -v p="$pct" 'BEGIN { printf "%d", p * 100 + 0.5 }')   # hundredths of a percent
    [ "$per10k" -le 10000 ] || die "percent > 100: $pct"
    table="telecart_loss_${iface//[^A-Za-z0-9_]/_}"
    ip netns exec "$name" nft delete table inet "$table" 2>/dev/null || true
    if [ "$per10k" -gt 0 ]; then
        printf '%s\n' \
            "table inet $table {" \
            "  chain pre {" \
            "    type filter hook prerouting priority -300; policy accept;" \
            "    iifname \"$iface\" meta l4proto udp numgen random mod 10000 < $per10k counter drop" \
            "  }" \
            "}" | ip netns exec "$name" nft -f -
    fi
    ;;
rate)
    need_name "${1:-}"; name="$1"; need_iface "${2:-}"; iface="$2"; rate="${3:-}"
    [ -n "$rate" ] || die "usage: rate NAME IFACE RATE|off"
    if [ "$rate" = off ]; then
        tc -n "$name" qdisc del dev "$iface" root 2>/dev/null || true
    else
        tc -n "$name" qdisc replace dev "$iface" root tbf rate "$rate" burst 32kbit latency 200ms
    fi
    ;;
netem)
    need_name "${1:-}"; name="$1"; need_iface "${2:-}"; iface="$2"
    shift 2
    if [ "${1:-}" = off ]; then
        tc -n "$name" qdisc del dev "$iface" root 2>/dev/null || true
    else
        [ "$#" -gt 0 ] || die "netem: missing netem arguments"
        if ! out=$(tc -n "$name" qdisc replace dev "$iface" root netem "$@" 2>&1); then
            echo "netns.sh: tc netem failed: $out" >&2
            if echo "$out" | grep -q 'qdisc kind is unknown'; then
                echo "netns.sh: this kernel has no sch_netem; use 'netns.sh loss' (nftables)" >&2
                exit 3
            fi
            exit 1
        fi
    fi
    ;;
delete)
    need_name "${1:-}"; name="$1"
    if exists "$name"; then ip netns delete "$name"; fi
    ;;
-h|--help|help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
