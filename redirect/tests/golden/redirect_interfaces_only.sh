nft -f - <<'EOF'
# Chokepoint capture (REDIRECT mode), rendered by chokepoint-redirect.
# One transaction: declaring the table first makes the delete succeed when it does not
# exist yet, so the table is replaced atomically and nothing else is touched.
table inet chokepoint
delete table inet chokepoint
table inet chokepoint {
	chain nat_prerouting {
		type nat hook prerouting priority dstnat - 10; policy accept;
		meta mark & 0x00003000 == 0x00002000 return comment "the gateway's own traffic"
		iifname "veth*" jump pod_redirect
		iifname "eth1" jump pod_redirect
	}

	chain pod_redirect {
		meta l4proto tcp redirect to :15001
	}

	chain filter_prerouting {
		type filter hook prerouting priority filter; policy accept;
		meta mark & 0x00003000 == 0x00002000 return comment "the gateway's own traffic"
		iifname "veth*" jump pod_enforce
		iifname "eth1" jump pod_enforce
	}

	chain pod_enforce {
		ct direction reply accept comment "replies on connections into pods"
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept comment "IPv6 neighbour discovery"
		meta l4proto tcp th dport 15001 fib daddr type local accept comment "redirected to the gateway"
		counter drop comment "chokepoint: fail closed, pod traffic no gateway socket took"
	}
}
EOF
