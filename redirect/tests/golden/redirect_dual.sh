nft -f - <<'EOF'
# Chokepoint capture (REDIRECT mode), rendered by chokepoint-redirect.
# One transaction: declaring the table first makes the delete succeed when it does not
# exist yet, so the table is replaced atomically and nothing else is touched.
table inet chokepoint
delete table inet chokepoint
table inet chokepoint {
	set pod_v4 {
		type ipv4_addr
		flags interval
		auto-merge
		elements = { 10.244.1.0/24 }
	}

	set pod_v6 {
		type ipv6_addr
		flags interval
		auto-merge
		elements = { fd00:10:244:1::/64 }
	}

	counter spoofed_sources {
	}

	chain nat_prerouting {
		type nat hook prerouting priority dstnat - 10; policy accept;
		meta mark & 0x00003000 == 0x00002000 return comment "the gateway's own traffic"
		iifname "cali*" jump pod_redirect
		ip saddr @pod_v4 jump pod_redirect
		ip6 saddr @pod_v6 jump pod_redirect
	}

	chain pod_redirect {
		meta l4proto { tcp, udp } th dport 53 redirect to :15053 comment "DNS to the DNS proxy"
		meta l4proto tcp redirect to :15001
	}

	chain filter_prerouting {
		type filter hook prerouting priority filter; policy accept;
		meta mark & 0x00003000 == 0x00002000 return comment "the gateway's own traffic"
		iifname "cali*" jump pod_enforce
		ip saddr @pod_v4 jump pod_enforce
		ip6 saddr @pod_v6 jump pod_enforce
		ct state new ct mark set ct mark & 0xffffcfff | 0x00003000 comment "connections that start outside the pods"
	}

	chain spoofed_source {
		counter name "spoofed_sources"
		limit rate 10/second burst 20 packets log prefix "chokepoint spoofed source: " level warn
		drop
	}

	chain pod_enforce {
		fib saddr . iif oif missing jump spoofed_source comment "source not routed via its input interface"
		ct direction reply ct mark & 0x00003000 == 0x00003000 accept comment "replies on connections into pods"
		ct direction reply ct mark & 0x00003000 == 0x00002000 fib daddr type local accept comment "replies to the gateway's own connections"
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 ip6 daddr { fe80::/10, ff02::1, ff02::2, ff02::1:ff00:0/104 } accept comment "IPv6 neighbour discovery on the link"
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 fib daddr type local accept comment "IPv6 neighbour discovery to this node"
		meta l4proto { tcp, udp } th dport 15053 fib daddr type local accept comment "redirected to the DNS proxy"
		meta l4proto tcp th dport 15001 fib daddr type local accept comment "redirected to the gateway"
		counter drop comment "chokepoint: fail closed, pod traffic no gateway socket took"
	}

	chain output {
		type filter hook output priority mangle; policy accept;
		ct direction original meta mark & 0x00003000 == 0x00002000 ct mark set ct mark & 0xffffcfff | 0x00002000 comment "connections the gateway opens"
		ct state new meta mark & 0x00003000 != 0x00002000 ct mark set ct mark & 0xffffcfff | 0x00003000 comment "connections other local processes open"
	}
}
EOF
