ip -4 route replace local 0.0.0.0/0 dev lo table 1287
ip -4 rule add pref 100 fwmark 0x1000/0x3000 lookup 1287
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

	counter spoofed_sources {
	}

	set unserved_v4 {
		type ipv4_addr . inet_proto . inet_service
	}

	chain unserved_services {
		type nat hook prerouting priority dstnat + 5; policy accept;
		iifname "cali*" jump pod_unserved
		ip saddr @pod_v4 jump pod_unserved
	}

	chain pod_unserved {
		meta l4proto tcp ip daddr . meta l4proto . th dport @unserved_v4 dnat ip to ip daddr:15001
		meta l4proto udp ip daddr . meta l4proto . th dport @unserved_v4 dnat ip to ip daddr:15002
	}

	chain prerouting {
		type filter hook prerouting priority dstnat + 10; policy accept;
		meta mark & 0x00003000 == 0x00002000 return comment "the gateway's own traffic"
		iifname "cali*" jump pod_capture
		ip saddr @pod_v4 jump pod_capture
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
		meta nfproto ipv4 meta l4proto { tcp, udp } th dport 53 tproxy ip to :15053 meta mark set meta mark & 0xffffcfff | 0x00001000 accept comment "DNS to the DNS proxy"
		meta nfproto ipv4 meta l4proto tcp tproxy ip to :15001 meta mark set meta mark & 0xffffcfff | 0x00001000 accept
		meta nfproto ipv4 meta l4proto udp tproxy ip to :15002 meta mark set meta mark & 0xffffcfff | 0x00001000 accept
		counter drop comment "chokepoint: fail closed, pod traffic no gateway socket took"
	}

	chain output {
		type route hook output priority mangle; policy accept;
		ct direction original meta mark & 0x00003000 == 0x00002000 ct mark set ct mark & 0xffffcfff | 0x00002000 comment "connections the gateway opens"
		ct state new meta mark & 0x00003000 != 0x00002000 ct mark set ct mark & 0xffffcfff | 0x00003000 comment "connections other local processes open"
		ct direction reply ct mark & 0x00003000 == 0x00002000 meta mark & 0x00003000 != 0x00002000 meta mark set meta mark & 0xffffcfff | 0x00001000 comment "local replies to the gateway's transparent upstream sockets"
	}
}
EOF
