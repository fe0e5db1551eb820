ip -4 route replace local 0.0.0.0/0 dev lo table 1287
ip -4 rule add pref 100 fwmark 0x1000/0x3000 lookup 1287
ip -6 route replace local ::/0 dev lo table 1287
ip -6 rule add pref 100 fwmark 0x1000/0x3000 lookup 1287
nft -f - <<'EOF'
# Chokepoint capture (TPROXY mode), rendered by chokepoint-redirect.
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

	set unserved_v4 {
		type ipv4_addr . inet_proto . inet_service
	}

	set unserved_v6 {
		type ipv6_addr . inet_proto . inet_service
	}

	chain unserved_services {
		type nat hook prerouting priority dstnat + 5; policy accept;
		iifname "cali*" jump pod_unserved
		ip saddr @pod_v4 jump pod_unserved
		ip6 saddr @pod_v6 jump pod_unserved
	}

	chain pod_unserved {
		meta l4proto tcp ip daddr . meta l4proto . th dport @unserved_v4 dnat ip to ip daddr:15001
		meta l4proto udp ip daddr . meta l4proto . th dport @unserved_v4 dnat ip to ip daddr:15002
		meta l4proto tcp ip6 daddr . meta l4proto . th dport @unserved_v6 dnat ip6 to ip6 daddr:15001
		meta l4proto udp ip6 daddr . meta l4proto . th dport @unserved_v6 dnat ip6 to ip6 daddr:15002
	}

	set fast_current {
		type mark
		elements = { 0x00010000 }
	}

	map fast_addressed_v4 {
		type inet_service . inet_service . inet_proto . ipv4_addr : inet_service . ipv4_addr
		size 65536
		flags dynamic,timeout
		timeout 3s
	}

	chain fast_note_v4 {
	}

	map fast_addressed_v6 {
		type inet_service . inet_service . inet_proto . ipv6_addr : inet_service . ipv6_addr
		size 65536
		flags dynamic,timeout
		timeout 3s
	}

	chain fast_note_v6 {
	}

	chain fast_queue {
	}

	chain fast_closing {
		tcp flags & rst != 0 ct event set "mark" ct mark set ct mark | 0x30000000 return comment "fast path: a reset closes both ends"
		ct direction original ct mark & 0x20000000 != 0x00000000 ct event set "mark"
		ct direction reply ct mark & 0x10000000 != 0x00000000 ct event set "mark"
		ct direction original ct mark set ct mark | 0x10000000
		ct direction reply ct mark set ct mark | 0x20000000
	}

	chain prerouting {
		type filter hook prerouting priority dstnat + 10; policy accept;
		meta mark & 0x00003000 == 0x00002000 return comment "the gateway's own traffic"
		iifname "cali*" jump pod_capture
		ip saddr @pod_v4 jump pod_capture
		ip6 saddr @pod_v6 jump pod_capture
		ct mark & 0x0fff0000 == 0x0fff0000 meta l4proto tcp reject with tcp reset comment "fast path: the other side of flows the policies deny now"
		ct mark & 0x0fff0000 == 0x0fff0000 drop
		meta l4proto tcp tcp flags & (fin | rst) != 0 ct mark & 0x0fff0000 0x00010000-0x0ffd0000 jump fast_closing comment "fast path: note the end that closed"
		ct mark & 0x0fff0000 0x00010000-0x0ffd0000 accept comment "fast path: the other side of allowed flows"
		ct state new ct mark set ct mark & 0xffffcfff | 0x00003000 comment "connections that start outside the pods"
		socket transparent 1 socket wildcard 0 meta mark set meta mark & 0xffffcfff | 0x00001000 accept comment "replies to the gateway's transparent upstream sockets"
	}

	chain spoofed_source {
		counter name "spoofed_sources"
		limit rate 10/second burst 20 packets log prefix "chokepoint spoofed source: " level warn
		drop
	}

	chain pod_capture {
		fib saddr . iif oif missing jump spoofed_source comment "source not routed via its input interface"
		ct direction reply socket transparent 1 socket wildcard 0 meta mark set meta mark & 0xffffcfff | 0x00001000 accept comment "replies to the gateway's transparent upstream sockets"
		ct direction reply ct mark & 0x00003000 == 0x00003000 accept comment "replies on connections into pods"
		ct direction reply ct mark & 0x00003000 == 0x00002000 fib daddr type local accept comment "replies to the gateway's own connections"
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 ip6 daddr { fe80::/10, ff02::1, ff02::2, ff02::1:ff00:0/104 } accept comment "IPv6 neighbour discovery on the link"
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 fib daddr type local accept comment "IPv6 neighbour discovery to this node"
		meta mark & 0x0fff0000 != 0x00000000 ct mark set meta mark & 0x0fff0000 ct event set destroy comment "fast path: the gateway's decision, from the queue; the flow announces only its end"
		meta mark & 0x0fff0000 != 0x00000000 meta mark set meta mark & 0xf000ffff
		meta l4proto tcp tcp flags & (fin | rst) != 0 ct mark & 0x0fff0000 0x00010000-0x0ffd0000 jump fast_closing comment "fast path: note the end that closed"
		ct mark & 0x0fff0000 == @fast_current accept comment "fast path: flows the policies in force allow"
		ct direction reply ct mark & 0x0fff0000 0x00010000-0x0ffd0000 accept comment "fast path: replies of allowed flows"
		ct mark & 0x0fff0000 == 0x0fff0000 meta l4proto tcp reject with tcp reset comment "fast path: flows the policies deny now"
		ct mark & 0x0fff0000 == 0x0fff0000 drop
		meta l4proto { tcp, udp } th dport 53 tproxy to :15053 meta mark set meta mark & 0xffffcfff | 0x00001000 accept comment "DNS to the DNS proxy"
		ct mark & 0x0fff0000 0x00010000-0x0ffd0000 meta mark set meta mark | 0x0fff0000 comment "fast path: a live flow, re-decided"
		meta nfproto ipv4 ct mark & 0x0fff0000 == 0x00000000 ct status dnat ct direction original meta l4proto { tcp, udp } meta mark set meta mark & 0xf000ffff | 0x0ffe0000 jump fast_note_v4 comment "fast path: a new flow kube-proxy translated; note where the pod sent it"
		meta nfproto ipv6 ct mark & 0x0fff0000 == 0x00000000 ct status dnat ct direction original meta l4proto { tcp, udp } meta mark set meta mark & 0xf000ffff | 0x0ffe0000 jump fast_note_v6 comment "fast path: a new flow kube-proxy translated; note where the pod sent it"
		ct mark & 0x0fff0000 != 0x0ffe0000 ct direction original meta l4proto { tcp, udp } jump fast_queue comment "fast path: new flows wait for the gateway's decision"
		meta l4proto tcp tproxy to :15001 meta mark set meta mark & 0xffffcfff | 0x00001000 accept
		meta l4proto udp tproxy to :15002 meta mark set meta mark & 0xffffcfff | 0x00001000 accept
		counter drop comment "chokepoint: fail closed, pod traffic no gateway socket took"
	}

	chain output {
		type route hook output priority mangle; policy accept;
		ct direction original meta mark & 0x00003000 == 0x00002000 ct mark set ct mark & 0xffffcfff | 0x00002000 comment "connections the gateway opens"
		ct state new meta mark & 0x00003000 != 0x00002000 ct mark set ct mark & 0xffffcfff | 0x00003000 comment "connections other local processes open"
		ct direction reply ct mark & 0x00003000 == 0x00002000 meta mark & 0x00003000 != 0x00002000 meta mark set meta mark & 0xffffcfff | 0x00001000 comment "local replies to the gateway's transparent upstream sockets"
		meta l4proto tcp tcp flags & (fin | rst) != 0 ct mark & 0x0fff0000 0x00010000-0x0ffd0000 jump fast_closing comment "fast path: note the end that closed"
	}

	chain challenge_untracked {
		type filter hook output priority raw; policy accept;
		meta mark & 0x0fff0000 == 0x0fff0000 notrack comment "fast path: challenge SYNs to the ends of revoked connections"
	}
}
EOF
