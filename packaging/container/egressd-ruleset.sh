#!/bin/sh
# egressd-ruleset: loads the gateway ruleset (config/nftables/egressd.nft) into the
# network namespace it runs in, with its defines taken from the environment, for hosts
# whose root file system cannot hold an edited copy (balenaOS): the balena service
# `ruleset` in deploy/balena/docker-compose.yml runs it at every start, as root with
# CAP_NET_ADMIN on the host's network.
#
#   DEVICE_IF      the devices' interface, or a set: eth1, or { "eth1", "wlan0" }
#   WAN_IF         the uplink
#   EGRESSD_DNS_PORT, EGRESSD_SNI_PORT   egressd's dns.listen and sni.listen ports
#   EGRESSD_SCOPE  shared_scope, device_scope or device_mac_scope (firewall.nftables.scope)
#   GATEWAY_ADMIN_TCP_PORTS  a set of ports, { 22 } or { 22, 22222 }
#
# A variable left unset keeps the file's own define. Values are checked before anything
# is loaded, and the file is the one egressd ships, so a value cannot add rules.
# `egressd-ruleset --list` prints egressd's table after loading.
set -eu

ruleset=${EGRESSD_RULESET:-/usr/lib/egressd/config/nftables/egressd.nft}
fail() { echo "egressd-ruleset: $*" >&2; exit 2; }
[ -r "$ruleset" ] || fail "cannot read $ruleset"

edits=''
define() { # NAME VALUE: replace the file's `define NAME = …` line
  grep -q "^define $1 = " "$ruleset" || fail "$ruleset has no define $1"
  edits="$edits
s|^define $1 = .*|define $1 = $2|"
}

matches() { # VALUE ERE: the whole value matches (one line: grep -x judges each line alone)
  case "$1" in *'
'*) return 1 ;; esac
  printf '%s\n' "$1" | grep -Eqx -- "$2"
}

NAME='[A-Za-z0-9_.:@-]{1,15}'

interfaces() { # NAME VALUE: one interface name, or a set of quoted names
  case "$2" in
    '{'*) matches "$2" "\\{ *\"$NAME\"( *, *\"$NAME\")* *\\}" || fail "$1: not a set of interface names like { \"eth1\", \"wlan0\" }: $2"
          define "$1" "$2" ;;
    *) matches "$2" "$NAME" || fail "$1: not an interface name (at most 15 of A-Z a-z 0-9 _ . : @ -): $2"
       define "$1" "\"$2\"" ;;
  esac
}

port() { # NAME VALUE
  case "$2" in '' | *[!0-9]*) fail "$1: not a port: $2" ;; esac
  [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || fail "$1: not a port: $2"
  define "$1" "$2"
}

[ -z "${DEVICE_IF:-}" ] || interfaces DEVICE_IF "$DEVICE_IF"
[ -z "${WAN_IF:-}" ] || interfaces WAN_IF "$WAN_IF"
[ -z "${EGRESSD_DNS_PORT:-}" ] || port EGRESSD_DNS_PORT "$EGRESSD_DNS_PORT"
[ -z "${EGRESSD_SNI_PORT:-}" ] || port EGRESSD_SNI_PORT "$EGRESSD_SNI_PORT"
if [ -n "${EGRESSD_SCOPE:-}" ]; then
  case "$EGRESSD_SCOPE" in
    shared_scope | device_scope | device_mac_scope) define EGRESSD_SCOPE "\"$EGRESSD_SCOPE\"" ;;
    *) fail "EGRESSD_SCOPE: shared_scope, device_scope or device_mac_scope, not $EGRESSD_SCOPE" ;;
  esac
fi
if [ -n "${GATEWAY_ADMIN_TCP_PORTS:-}" ]; then
  matches "$GATEWAY_ADMIN_TCP_PORTS" '\{ *[0-9]{1,5}( *, *[0-9]{1,5})* *\}' ||
    fail "GATEWAY_ADMIN_TCP_PORTS: a set of ports like { 22 }, not $GATEWAY_ADMIN_TCP_PORTS"
  define GATEWAY_ADMIN_TCP_PORTS "$GATEWAY_ADMIN_TCP_PORTS"
fi

sed -e "$edits" "$ruleset" | nft -f -
echo "egressd-ruleset: loaded $ruleset (DEVICE_IF=${DEVICE_IF:-file} WAN_IF=${WAN_IF:-file} DNS=${EGRESSD_DNS_PORT:-file} SNI=${EGRESSD_SNI_PORT:-file} scope=${EGRESSD_SCOPE:-file})"
if [ "${1:-}" = --list ]; then nft list table inet egressd; fi
