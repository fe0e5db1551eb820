//! The fast path's kernel half in a lab (pod ── node ── outside host), with a test reader on
//! the queue standing in for the gateway: the queue rule installs, only a flow's first packet
//! waits in the queue, the decision in the mark sticks to the flow, a new generation queues
//! live flows again, a revoked TCP flow is reset, and with no reader nothing gets through.
//! Then the reload walk's parts: the conntrack dump finds the flows by their marks, a mark
//! update moves a flow to a new generation without a queued packet, and challenge SYNs reset
//! both ends of an idle revoked connection, in both families. Last, what the caps' follower
//! hears: a decided flow announces nothing until both ends of its TCP connection closed, and
//! then once.
//! Needs root; fails (does not skip) without it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chokepoint_lab::{HostSpec, Lab, POD_IFACE_PREFIX, PodSpec, Topology, netns, require_root};
use chokepoint_redirect::challenge::Challenger;
use chokepoint_redirect::conntrack::events::Events;
use chokepoint_redirect::conntrack::{Conntrack, L4};
use chokepoint_redirect::packet::{self, Tuple};
use chokepoint_redirect::queue::{PacketQueue, QueueVerdict, stats};
use chokepoint_redirect::{CaptureSpec, FastPath, InstallMode, install, set_generation, verify};

use crate::specs;

const OUTSIDE: &str = "203.0.113.5";
const OUTSIDE_V6: &str = "2001:db8:5::5";

/// What the test reader does with each queued packet.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Allow(u32),
    Revoke,
}

/// Reads queue 100 (the spec has one queue) in the node's namespace, answering every packet
/// with what `answers` says last, and reporting each tuple.
fn reader(node: &str, spec: &CaptureSpec) -> (mpsc::Sender<Answer>, mpsc::Receiver<Tuple>) {
    let (answer_tx, answer_rx) = mpsc::channel::<Answer>();
    let (seen_tx, seen_rx) = mpsc::channel();
    let marks = spec.fast_path.unwrap().marks();
    let (bound_tx, bound_rx) = mpsc::channel();
    netns::spawn_in(node, move || {
        let mut q = PacketQueue::bind(100, 1024).expect("binding queue 100");
        bound_tx.send(()).unwrap();
        let mut answer = Answer::Allow(1);
        let mut batch = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            while let Ok(a) = answer_rx.try_recv() {
                answer = a;
            }
            batch.clear();
            match q.receive(&mut batch) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Err(e) => panic!("queue receive: {e}"),
            }
            for p in &batch {
                let tuple = packet::parse(&p.headers).expect("a queued packet parses");
                if seen_tx.send(tuple).is_err() {
                    return;
                }
                let state = match answer {
                    Answer::Allow(g) => marks.allowed(g),
                    Answer::Revoke => marks.revoked(),
                };
                q.verdict(
                    p.id,
                    QueueVerdict::Repeat {
                        mark: marks.with(p.mark, state),
                    },
                )
                .expect("verdict");
            }
        }
    })
    .expect("reader thread");
    bound_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("queue bound");
    (answer_tx, seen_rx)
}

/// A lab of one pod and one outside host (IPv6 too, when asked) and a capture with the fast
/// path on one queue (100) for it, not installed yet: the lab, the pod's, the node's and the
/// host's namespaces, the fast path and the capture.
fn fast_lab(ipv6: bool) -> (Lab, String, String, String, FastPath, CaptureSpec) {
    let mut host = HostSpec::new("outside", OUTSIDE.parse().unwrap());
    if ipv6 {
        host = host.ipv6(OUTSIDE_V6.parse().unwrap());
    }
    let lab = Topology::new()
        .ipv6(ipv6)
        .pod(PodSpec::new("tenant-a", "pod"))
        .host(host)
        .build()
        .expect("building the lab");
    let mut fast = specs::fast_path();
    fast.queues = 1;
    let spec = CaptureSpec {
        pod_interfaces: vec![format!("{POD_IFACE_PREFIX}*")],
        fast_path: Some(fast),
        ..specs::base()
    };
    let pod = lab.pod("tenant-a", "pod").unwrap().netns.clone();
    let node = lab.node_netns().to_owned();
    let outside = lab.host("outside").unwrap().netns.clone();
    (lab, pod, node, outside, fast, spec)
}

/// Installs `spec` in the node's namespace.
fn install_in(node: &str, spec: &CaptureSpec) {
    netns::run_in(node, || install(spec, InstallMode::Fresh))
        .unwrap()
        .expect("installing the capture with the fast path");
}

fn drain(seen: &mpsc::Receiver<Tuple>) -> Vec<Tuple> {
    thread::sleep(Duration::from_millis(200));
    seen.try_iter().collect()
}

#[test]
fn first_packets_wait_for_a_decision_that_then_sticks_to_the_flow() {
    require_root();
    let (lab, pod, node, outside, fast, spec) = fast_lab(false);
    let (answers, seen) = reader(&node, &spec);
    install_in(&node, &spec);
    netns::run_in(&node, || verify(&spec))
        .unwrap()
        .expect("verify");

    // UDP: three datagrams of one flow all arrive; only the first was queued.
    let server = netns::run_in(&outside, || UdpSocket::bind("0.0.0.0:9000"))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let client = netns::run_in(&pod, || UdpSocket::bind("0.0.0.0:40000"))
        .unwrap()
        .unwrap();
    let to: SocketAddr = format!("{OUTSIDE}:9000").parse().unwrap();
    for i in 0..3u8 {
        client.send_to(&[i], to).unwrap();
        let mut b = [0u8; 4];
        let (n, from) = server.recv_from(&mut b).expect("the datagram arrives");
        assert_eq!((&b[..n], from.port()), (&[i][..], 40000));
    }
    let queued = drain(&seen);
    assert_eq!(queued.len(), 1, "only the first datagram waits: {queued:?}");
    assert_eq!(queued[0].dst, to);

    // TCP: the SYN is queued once, the rest of the connection never is.
    let listener = netns::run_in(&outside, || TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    let to_tcp: SocketAddr = format!("{OUTSIDE}:8080").parse().unwrap();
    let mut stream = netns::run_in(&pod, || {
        TcpStream::connect_timeout(&to_tcp, Duration::from_secs(3))
    })
    .unwrap()
    .expect("the allowed connection is made");
    let (mut served, _) = listener.accept().unwrap();
    for _ in 0..20 {
        stream.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        served.read_exact(&mut b).unwrap();
        served.write_all(b"pong").unwrap();
        stream.read_exact(&mut b).unwrap();
    }
    let queued = drain(&seen);
    assert_eq!(queued.len(), 1, "only the SYN waits: {queued:?}");
    assert!(queued[0].syn);

    // A new generation: each live flow's next packet is queued once more; the UDP flow stays
    // allowed, the TCP one is revoked and reset.
    netns::run_in(&node, || set_generation(&fast, 2))
        .unwrap()
        .unwrap();
    answers.send(Answer::Allow(2)).unwrap();
    client.send_to(b"x", to).unwrap();
    server
        .recv_from(&mut [0u8; 4])
        .expect("re-allowed at generation 2");
    client.send_to(b"y", to).unwrap();
    server.recv_from(&mut [0u8; 4]).expect("and stays allowed");
    assert_eq!(drain(&seen).len(), 1, "re-decided once");
    answers.send(Answer::Revoke).unwrap();
    netns::run_in(&node, || set_generation(&fast, 3))
        .unwrap()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = stream.write_all(b"ping");
    let got = stream.read(&mut [0u8; 4]);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a revoked connection is reset, got {got:?}"
    );
    assert!(!drain(&seen).is_empty());

    let s = netns::run_in(&node, stats).unwrap().unwrap();
    assert_eq!(s.len(), 1, "one queue bound: {s:?}");
    assert_eq!(s[0].queue_dropped + s[0].user_dropped, 0, "{s:?}");
    drop(lab);
}

/// A connection's read ends with a reset within `within`, with nothing written.
fn reset_while_idle(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    matches!(stream.read(&mut [0u8; 4]), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn the_reload_walk_moves_live_flows_on_and_resets_both_ends_of_revoked_ones() {
    require_root();
    let (lab, pod, node, outside, fast, spec) = fast_lab(true);
    let marks = fast.marks();
    let (_answers, seen) = reader(&node, &spec);
    install_in(&node, &spec);

    // A UDP flow and an idle TCP connection per family, allowed at generation 1.
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for host in [OUTSIDE, OUTSIDE_V6] {
        let any = if host.contains(':') {
            "[::]"
        } else {
            "0.0.0.0"
        };
        let to_udp: SocketAddr = SocketAddr::new(host.parse().unwrap(), 9000);
        let server = netns::run_in(&outside, || UdpSocket::bind(to_udp))
            .unwrap()
            .unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let client = netns::run_in(&pod, || UdpSocket::bind(format!("{any}:0")))
            .unwrap()
            .unwrap();
        client.send_to(b"a", to_udp).unwrap();
        server
            .recv_from(&mut [0u8; 4])
            .expect("allowed at generation 1");
        udp.push((client, server, to_udp));

        let to_tcp = SocketAddr::new(host.parse().unwrap(), 8080);
        let listener = netns::run_in(&outside, || TcpListener::bind(to_tcp))
            .unwrap()
            .unwrap();
        let stream = netns::run_in(&pod, || {
            TcpStream::connect_timeout(&to_tcp, Duration::from_secs(3))
        })
        .unwrap()
        .expect("the allowed connection is made");
        let (served, _) = listener.accept().unwrap();
        tcp.push((stream, served));
    }
    assert_eq!(drain(&seen).len(), 4, "each flow's first packet was queued");

    netns::run_in(&node, || set_generation(&fast, 2))
        .unwrap()
        .unwrap();
    let entries = netns::run_in(&node, || {
        Conntrack::open()?.entries(|mark| marks.allowed_generation(mark) == Some(1))
    })
    .unwrap()
    .expect("dumping conntrack");
    let pod_ips = lab.pod("tenant-a", "pod").unwrap().ips();
    assert_eq!(entries.len(), 4, "{entries:#?}");
    assert!(
        entries.iter().all(|e| pod_ips.contains(&e.src.ip())),
        "{entries:#?}"
    );

    // UDP moved to generation 2 by the walk: its next datagram is not queued.
    // TCP revoked and both ends woken.
    netns::run_in(&node, || -> std::io::Result<()> {
        let mut ct = Conntrack::open()?;
        let mut challenger = Challenger::new(marks.revoked());
        for e in &entries {
            if e.protocol == L4::Udp {
                assert!(ct.set_mark(e, marks.allowed(2), marks.mask())?);
            } else {
                assert!(ct.set_mark(e, marks.revoked(), marks.mask())?);
                challenger.send(e.dst, e.src, 1)?;
                challenger.send(e.src, e.reached, 1)?;
            }
        }
        Ok(())
    })
    .unwrap()
    .expect("updating the marks and sending the challenges");
    for (client, server, to) in &udp {
        client.send_to(b"b", *to).unwrap();
        server.recv_from(&mut [0u8; 4]).expect("still allowed");
    }
    assert_eq!(drain(&seen).len(), 0, "nothing re-queued after the walk");
    for (stream, served) in &mut tcp {
        assert!(
            reset_while_idle(stream, Duration::from_secs(3)),
            "the pod's end"
        );
        assert!(
            reset_while_idle(served, Duration::from_secs(3)),
            "the far end"
        );
    }
    // An entry that is gone is reported as such, not as an error.
    let gone = chokepoint_redirect::conntrack::Entry {
        protocol: L4::Udp,
        src: "10.244.1.99:1".parse().unwrap(),
        dst: "203.0.113.5:1".parse().unwrap(),
        reached: "203.0.113.5:1".parse().unwrap(),
        mark: 0,
        closed: false,
    };
    let updated = netns::run_in(&node, || {
        Conntrack::open()?.set_mark(&gone, 0, marks.mask())
    })
    .unwrap()
    .unwrap();
    assert!(!updated);
    drop(lab);
}

/// Every non-destroy announcement of TCP flows from the pod that `events` holds within
/// `for_`, by the pod's address, with its mark.
fn announcements(
    events: &mut Events,
    for_: Duration,
) -> std::collections::HashMap<SocketAddr, Vec<u32>> {
    let mut by_flow: std::collections::HashMap<SocketAddr, Vec<u32>> = Default::default();
    let deadline = Instant::now() + for_;
    while Instant::now() < deadline {
        let mut got = Vec::new();
        events.receive(&mut got).expect("reading conntrack events");
        for e in got {
            if e.entry.protocol == L4::Tcp && !e.destroyed {
                by_flow.entry(e.entry.src).or_default().push(e.entry.mark);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    by_flow
}

/// A connection from the pod to `to` (which `listener` serves) and its accepted end, after
/// one exchange each way.
fn connected(pod: &str, listener: &TcpListener, to: SocketAddr) -> (TcpStream, TcpStream) {
    let mut stream = netns::run_in(pod, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
    })
    .unwrap()
    .expect("the allowed connection is made");
    let (mut served, _) = listener.accept().unwrap();
    stream.write_all(b"ping").unwrap();
    served.read_exact(&mut [0u8; 4]).unwrap();
    served.write_all(b"pong").unwrap();
    stream.read_exact(&mut [0u8; 4]).unwrap();
    (stream, served)
}

/// Closes a connection from both ends, the pod's first, each FIN seen by the other end.
fn close_both(mut stream: TcpStream, mut served: TcpStream) {
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(served.read(&mut [0u8; 4]).unwrap(), 0, "the pod's FIN");
    drop(served);
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(stream.read(&mut [0u8; 4]).unwrap(), 0, "the far end's FIN");
}

#[test]
fn a_decided_connection_announces_only_that_both_ends_closed() {
    require_root();
    let (lab, pod, node, outside, fast, spec) = fast_lab(true);
    let closes = fast.closes();
    let (_answers, seen) = reader(&node, &spec);
    install_in(&node, &spec);
    // With `nf_conntrack_events` at its default (2) only entries created while someone
    // listens announce anything: subscribe before the flows.
    let mut events = netns::run_in(&node, Events::subscribe)
        .unwrap()
        .expect("subscribing to conntrack events");

    // Per family: three connections that both ends close, one the pod resets, each with an
    // exchange first; and one left open. Then one to a process on the node.
    let mut closing = Vec::new();
    let mut reset = Vec::new();
    let mut open = Vec::new();
    let mut held = Vec::new();
    for host in [OUTSIDE, OUTSIDE_V6] {
        let to = SocketAddr::new(host.parse().unwrap(), 8080);
        let listener = netns::run_in(&outside, || TcpListener::bind(to))
            .unwrap()
            .unwrap();
        let mut pairs: Vec<_> = (0..5).map(|_| connected(&pod, &listener, to)).collect();
        let (last, last_served) = pairs.pop().unwrap();
        open.push(last.local_addr().unwrap());
        let (resetting, served) = pairs.pop().unwrap();
        reset.push(resetting.local_addr().unwrap());
        socket2::SockRef::from(&resetting)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(resetting);
        drop(served);
        for (stream, served) in pairs {
            closing.push(stream.local_addr().unwrap());
            close_both(stream, served);
        }
        held.push((last, last_served));
    }
    // A far end on the node itself: its FIN leaves through `output`, not `prerouting`.
    let local: SocketAddr = SocketAddr::new(chokepoint_lab::NODE_IPV4.into(), 8081);
    let listener = netns::run_in(&node, || TcpListener::bind(local))
        .unwrap()
        .unwrap();
    let (stream, served) = connected(&pod, &listener, local);
    closing.push(stream.local_addr().unwrap());
    close_both(stream, served);
    assert_eq!(drain(&seen).len(), 11, "each connection's SYN was queued");

    let heard = announcements(&mut events, Duration::from_secs(1));
    for src in closing.iter().chain(&reset) {
        let marks = heard.get(src).cloned().unwrap_or_default();
        assert_eq!(
            marks.len(),
            1,
            "{src}: one announcement, when both ends closed: {heard:x?}"
        );
        assert!(closes.both_closed(marks[0]), "{src}: {:#x}", marks[0]);
        assert_eq!(
            fast.marks().allowed_generation(marks[0]),
            Some(1),
            "{src}: the flow's state is kept"
        );
    }
    for src in &open {
        assert!(!heard.contains_key(src), "{src} announced: {heard:x?}");
    }
    drop(held);
    drop(lab);
}

#[test]
fn a_burst_of_new_flows_is_taken_and_answered_with_one_call_each() {
    require_root();
    let (lab, pod, node, outside, fast, spec) = fast_lab(false);
    let marks = fast.marks();
    let mut queue = netns::run_in(&node, || PacketQueue::bind(100, 1024))
        .unwrap()
        .expect("binding queue 100");
    install_in(&node, &spec);

    // Nothing queued: the wait ends empty.
    let mut batch = Vec::new();
    assert_eq!(queue.receive_waiting(&mut batch).unwrap(), 0);

    // Ten new UDP flows, queued while nobody reads.
    let to: SocketAddr = format!("{OUTSIDE}:9000").parse().unwrap();
    let server = netns::run_in(&outside, || UdpSocket::bind(to))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let clients: Vec<UdpSocket> = (0..10u8)
        .map(|i| {
            let c = netns::run_in(&pod, || UdpSocket::bind("0.0.0.0:0"))
                .unwrap()
                .unwrap();
            c.send_to(&[i], to).unwrap();
            c
        })
        .collect();
    let taken = queue.receive_waiting(&mut batch).unwrap();
    assert_eq!(taken, 10, "all ten in one receive: {batch:?}");
    let verdicts: Vec<_> = batch
        .iter()
        .map(|q| {
            (
                q.id,
                QueueVerdict::Repeat {
                    mark: marks.with(q.mark, marks.allowed(1)),
                },
            )
        })
        .collect();
    queue
        .verdicts(&verdicts)
        .expect("the verdicts, in one send");
    let mut got: Vec<u8> = (0..10)
        .map(|_| {
            let mut b = [0u8; 4];
            let (n, _) = server
                .recv_from(&mut b)
                .expect("each flow's datagram arrives");
            assert_eq!(n, 1);
            b[0]
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    drop(clients);
    drop(lab);
}
