#!/usr/bin/env bash
# Taking back what a daemon (dockerd, kubelet, kube-proxy) left in the host's iptables and
# ip6tables, without touching anybody else's rules.
#
#   netfilter_remove RULES CHAINS   in the filter, nat and mangle tables of both families: deletes
#                                   each rule whose text matches the extended regex RULES (outside
#                                   the chains themselves), then flushes and deletes the chains
#                                   whose names match CHAINS (an anchored extended regex)
#   netfilter_tables                prints the tables that exist now, "FAMILY TABLE" a line
#   netfilter_drop_new_tables FILE  deletes the tables not listed in FILE (netfilter_tables from
#                                   before) that hold no rule: iptables-nft makes them on first use

# _netfilter_cmd FAMILY: the iptables command of an nft family (ip, ip6).
_netfilter_cmd() { if [[ "$1" == ip6 ]]; then echo ip6tables; else echo iptables; fi; }

netfilter_remove() {
  local rules="$1" chains="$2" family cmd table line chain
  for family in ip ip6; do
    cmd="$(_netfilter_cmd "$family")"
    for table in filter nat mangle; do
      "$cmd" -t "$table" -S 2>/dev/null | grep -E '^-A ' | grep -E -- "$rules" |
        grep -vE "^-A ($chains) " | while read -r line; do
        # shellcheck disable=SC2086 # a rule as iptables -S printed it, split into its words
        "$cmd" -t "$table" ${line/#-A/-D} 2>/dev/null || true
      done || true
      for chain in $("$cmd" -t "$table" -S 2>/dev/null | sed -n 's/^-N //p' | grep -E "^($chains)$" || true); do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd" -t "$table" -S 2>/dev/null | sed -n 's/^-N //p' | grep -E "^($chains)$" || true); do
        "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

netfilter_tables() {
  iptables-save 2>/dev/null | sed -n 's/^\*/ip /p'
  ip6tables-save 2>/dev/null | sed -n 's/^\*/ip6 /p'
}

netfilter_drop_new_tables() {
  local family table
  while read -r family table; do
    grep -qx "$family $table" "$1" 2>/dev/null && continue
    if "$(_netfilter_cmd "$family")-save" -t "$table" 2>/dev/null | grep -qE '^(-A|:[^ ]+ - )'; then continue; fi
    nft delete table "$family" "$table" 2>/dev/null || true
  done < <(netfilter_tables)
}
