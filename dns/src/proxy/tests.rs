//! The proxy core on plain loopback sockets against a fake upstream written here with
//! hickory-proto. No transparent sockets, no namespaces: only 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::*;
use crate::cache::CacheLimits;
use crate::metrics::QueryLabels;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------------
// The fake upstream

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Udp,
    Tcp,
}

/// What the fake upstream does with one query, in order.
enum Step {
    /// Send these bytes from the upstream's own socket (UDP) or connection (TCP).
    Send(Vec<u8>),
    /// Send these bytes from a different socket (UDP only): an off-path spoofer.
    SendFromStranger(Vec<u8>),
    Sleep(Duration),
}

type Handler = Arc<dyn Fn(&Message, Via) -> Vec<Step> + Send + Sync>;
/// Every query the fake upstream received, raw, with how it came.
type Seen = Arc<Mutex<Vec<(Via, Vec<u8>)>>>;

struct Fake {
    addr: SocketAddr,
    /// Every query received, raw, with how it came.
    seen: Seen,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Fake {
    fn seen(&self) -> Vec<(Via, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn fake(handler: impl Fn(&Message, Via) -> Vec<Step> + Send + Sync + 'static) -> Fake {
    let handler: Handler = Arc::new(handler);
    // UDP and TCP on the same port.
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((LOOPBACK, port)).await {
            break (Arc::new(udp), tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let seen: Seen = Arc::default();

    let udp_task = {
        let (handler, seen) = (handler.clone(), seen.clone());
        tokio::spawn(async move {
            let stranger = Arc::new(UdpSocket::bind((LOOPBACK, 0)).await.unwrap());
            let mut buf = vec![0u8; 65535];
            loop {
                let (n, from) = udp.recv_from(&mut buf).await.unwrap();
                let bytes = buf[..n].to_vec();
                seen.lock().unwrap().push((Via::Udp, bytes.clone()));
                let Ok(query) = Message::from_vec(&bytes) else {
                    continue;
                };
                let steps = handler(&query, Via::Udp);
                let (udp, stranger) = (udp.clone(), stranger.clone());
                tokio::spawn(async move {
                    for step in steps {
                        match step {
                            Step::Send(b) => {
                                udp.send_to(&b, from).await.unwrap();
                            }
                            Step::SendFromStranger(b) => {
                                stranger.send_to(&b, from).await.unwrap();
                            }
                            Step::Sleep(d) => tokio::time::sleep(d).await,
                        }
                    }
                });
            }
        })
    };
    let tcp_task = {
        let (handler, seen) = (handler.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = tcp.accept().await.unwrap();
                let (handler, seen) = (handler.clone(), seen.clone());
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if stream.read_exact(&mut bytes).await.is_err() {
                            return;
                        }
                        seen.lock().unwrap().push((Via::Tcp, bytes.clone()));
                        let Ok(query) = Message::from_vec(&bytes) else {
                            return;
                        };
                        for step in handler(&query, Via::Tcp) {
                            match step {
                                Step::Send(b) => {
                                    let mut frame = (b.len() as u16).to_be_bytes().to_vec();
                                    frame.extend_from_slice(&b);
                                    if stream.write_all(&frame).await.is_err() {
                                        return;
                                    }
                                }
                                Step::SendFromStranger(_) => {}
                                Step::Sleep(d) => tokio::time::sleep(d).await,
                            }
                        }
                    }
                });
            }
        })
    };
    Fake {
        addr,
        seen,
        tasks: vec![udp_task, tcp_task],
    }
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn a(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
}

fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

/// A well-formed answer to `query` (same id, question, RD; RA set) with these records.
fn reply(query: &Message, answers: Vec<Record>) -> Message {
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(query.queries.iter().cloned());
    m.add_answers(answers);
    m
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap()
}

/// The zone most tests use.
fn zone(query: &Message, _via: Via) -> Vec<Step> {
    let q = &query.queries[0];
    let qname = q.name.to_lowercase().to_ascii();
    let answers = match (qname.as_str(), q.query_type) {
        ("www.example.test.", RecordType::A) => vec![
            cname("www.example.test.", 300, "www.example.cdn.test."),
            cname("www.example.cdn.test.", 120, "edge.cdn.test."),
            a("edge.cdn.test.", 60, "192.0.2.10"),
            a("edge.cdn.test.", 60, "192.0.2.11"),
        ],
        ("www.example.test.", RecordType::AAAA) => vec![
            cname("www.example.test.", 300, "edge.cdn.test."),
            aaaa("edge.cdn.test.", 90, "2001:db8::10"),
        ],
        ("plain.test.", RecordType::A) => vec![a("plain.test.", 30, "192.0.2.30")],
        _ => vec![],
    };
    vec![Step::Send(bytes(&reply(query, answers)))]
}

// ---------------------------------------------------------------------------------------------
// The proxy under test

#[derive(Debug)]
struct TestPolicy {
    namespace: Option<Arc<str>>,
    allow: AtomicBool,
    names_apply: AtomicBool,
    calls: Mutex<Vec<(SocketAddr, SocketAddr, bool)>>,
}

impl Policy for TestPolicy {
    fn source_namespace(&self, _src: IpAddr) -> Option<Arc<str>> {
        self.namespace.clone()
    }

    fn allow(&self, src: SocketAddr, original_dst: SocketAddr, tcp: bool) -> bool {
        self.calls.lock().unwrap().push((src, original_dst, tcp));
        self.allow.load(Ordering::SeqCst)
    }

    fn names_apply(&self, _src: IpAddr) -> bool {
        self.names_apply.load(Ordering::SeqCst)
    }
}

struct Harness {
    proxy: Arc<DnsProxy>,
    cache: Arc<Cache>,
    metrics: Metrics,
    policy: Arc<TestPolicy>,
    udp: SocketAddr,
    tcp: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Harness {
    fn count(&self, transport: Transport, result: QueryResult) -> u64 {
        self.metrics
            .queries
            .get_or_create(&QueryLabels { transport, result })
            .get()
    }
}

fn settings() -> DnsSettings {
    DnsSettings {
        timeout: Duration::from_millis(400),
        min_ttl: Duration::ZERO,
        grace: Duration::ZERO,
        ..DnsSettings::default()
    }
}

async fn start(upstream: SocketAddr, settings: DnsSettings, namespace: Option<&str>) -> Harness {
    let metrics = Metrics::default();
    let cache = Arc::new(Cache::new(CacheLimits::from_settings(&settings), &metrics));
    let policy = Arc::new(TestPolicy {
        namespace: namespace.map(Arc::from),
        allow: AtomicBool::new(true),
        names_apply: AtomicBool::new(false),
        calls: Mutex::default(),
    });
    let proxy = Arc::new(DnsProxy::new(
        &settings,
        upstream,
        cache.clone(),
        policy.clone(),
        metrics.clone(),
    ));
    let udp = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let tcp = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let tasks = vec![
        tokio::spawn(
            proxy
                .clone()
                .serve_udp(udp, UdpMode::Plain, std::future::pending()),
        ),
        tokio::spawn(proxy.clone().serve_tcp(tcp, std::future::pending())),
    ];
    Harness {
        proxy,
        cache,
        metrics,
        policy,
        udp: udp_addr,
        tcp: tcp_addr,
        tasks,
    }
}

fn query(qname: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    m
}

fn with_edns(mut m: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    m.set_edns(edns);
    m
}

/// Sends raw bytes over UDP and waits up to `wait` for one datagram back.
async fn udp_exchange_raw(proxy: SocketAddr, query: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    socket.send_to(query, proxy).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, from) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    assert_eq!(from, proxy);
    Some(buf[..n].to_vec())
}

async fn udp_ask(proxy: SocketAddr, query: &Message) -> Message {
    let raw = udp_exchange_raw(proxy, &bytes(query), Duration::from_secs(5))
        .await
        .expect("no answer");
    Message::from_vec(&raw).unwrap()
}

async fn tcp_write(stream: &mut TcpStream, message: &[u8]) {
    let mut frame = (message.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    stream.write_all(&frame).await.unwrap();
}

async fn tcp_read(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
        .await
        .expect("tcp answer timed out")
        .ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers.iter().filter_map(|r| r.data.ip_addr()).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn answers_are_recorded_before_they_are_released() {
    let upstream = fake(zone).await;
    let h = start(upstream.addr, settings(), Some("team-a")).await;

    let q = query("WWW.Example.Test.", RecordType::A);
    let raw = udp_exchange_raw(h.udp, &bytes(&q), Duration::from_secs(5))
        .await
        .unwrap();
    // The barrier: the answer is in hand; nothing else has run in this task since. The cache
    // must already hold the question's name; the chain's other names are not learned.
    let now = Instant::now();
    for addr in ["192.0.2.10", "192.0.2.11"] {
        assert!(
            h.cache
                .resolved("team-a", "www.example.test", ip(addr), now),
            "{addr}"
        );
        assert_eq!(
            h.cache.names_for("team-a", ip(addr), now),
            [Arc::from("www.example.test")]
        );
    }
    assert!(
        !h.cache
            .resolved("team-b", "www.example.test", ip("192.0.2.10"), now)
    );
    // TTL is the chain's minimum (60 s, no clamping in these settings).
    let expiry = h
        .cache
        .expiry("team-a", "www.example.test", ip("192.0.2.10"))
        .unwrap();
    assert!(expiry <= now + Duration::from_secs(60) && expiry > now + Duration::from_secs(55));

    let answer = Message::from_vec(&raw).unwrap();
    assert_eq!(
        answer.metadata.id, q.metadata.id,
        "the pod's id is restored"
    );
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&answer), [ip("192.0.2.10"), ip("192.0.2.11")]);

    // AAAA over TCP, recorded the same way.
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    let q6 = query("www.example.test.", RecordType::AAAA);
    tcp_write(&mut stream, &bytes(&q6)).await;
    let raw6 = tcp_read(&mut stream).await.unwrap();
    let now = Instant::now();
    assert!(
        h.cache
            .resolved("team-a", "www.example.test", ip("2001:db8::10"), now)
    );
    assert_eq!(
        h.cache.names_for("team-a", ip("2001:db8::10"), now),
        [Arc::from("www.example.test")]
    );
    assert_eq!(
        Message::from_vec(&raw6).unwrap().metadata.id,
        q6.metadata.id
    );

    // The upstream saw fresh, varying ids, not the pod's.
    for _ in 0..3 {
        let mut q = query("plain.test.", RecordType::A);
        q.metadata.id = 0x4242;
        assert_eq!(udp_ask(h.udp, &q).await.metadata.id, 0x4242);
    }
    let upstream_ids: Vec<u16> = upstream
        .seen()
        .iter()
        .skip(2)
        .filter_map(|(_, r)| crate::wire::id_of(r))
        .collect();
    assert_eq!(upstream_ids.len(), 3);
    assert!(
        upstream_ids.iter().any(|id| *id != 0x4242),
        "{upstream_ids:?}"
    );
    assert!(
        upstream_ids.windows(2).any(|w| w[0] != w[1]),
        "{upstream_ids:?}"
    );
    assert_eq!(h.count(Transport::Udp, QueryResult::Ok), 4);
    assert_eq!(h.count(Transport::Tcp, QueryResult::Ok), 1);
    assert_eq!(h.metrics.cache_entries.get() as usize, h.cache.len());

    // The flow verdict was asked with the pod's address and the server it addressed.
    let calls = h.policy.calls.lock().unwrap().clone();
    assert!(calls.iter().any(|(_, dst, tcp)| *dst == h.udp && !tcp));
    assert!(calls.iter().any(|(_, dst, tcp)| *dst == h.tcp && *tcp));
}

#[tokio::test]
async fn unknown_sources_are_answered_but_not_recorded() {
    let upstream = fake(zone).await;
    let h = start(upstream.addr, settings(), None).await;
    let answer = udp_ask(h.udp, &query("plain.test.", RecordType::A)).await;
    assert_eq!(ips(&answer), [ip("192.0.2.30")]);
    assert!(h.cache.is_empty());
}

#[tokio::test]
async fn spoofed_answers_are_ignored() {
    let upstream = fake(|query, _via| {
        let spoofed = |m: &Message| {
            let mut r = reply(m, vec![a("bank.test.", 3600, "203.0.113.66")]);
            r.answers[0].name = m.queries[0].name.clone();
            r
        };
        // Wrong id.
        let mut wrong_id = spoofed(query);
        wrong_id.metadata.id = query.metadata.id.wrapping_add(1);
        // Right id, another question.
        let mut wrong_question = spoofed(query);
        wrong_question.queries[0].name = name("bank.test.");
        wrong_question.answers[0].name = name("bank.test.");
        // Right id and question, from another address.
        let stranger = spoofed(query);
        // A query, not a response.
        let mut not_a_response = spoofed(query);
        not_a_response.metadata.message_type = MessageType::Query;
        let real = reply(query, vec![a("login.test.", 60, "192.0.2.20")]);
        vec![
            Step::Send(bytes(&wrong_id)),
            Step::Send(bytes(&wrong_question)),
            Step::SendFromStranger(bytes(&stranger)),
            Step::Send(bytes(&not_a_response)),
            Step::Send(vec![0xde, 0xad]),
            Step::Sleep(Duration::from_millis(50)),
            Step::Send(bytes(&real)),
        ]
    })
    .await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let answer = udp_ask(h.udp, &query("login.test.", RecordType::A)).await;
    assert_eq!(ips(&answer), [ip("192.0.2.20")]);
    let now = Instant::now();
    assert!(h.cache.resolved("ns", "login.test", ip("192.0.2.20"), now));
    assert!(h.cache.names_for("ns", ip("203.0.113.66"), now).is_empty());
    assert_eq!(h.cache.len(), 1);
    // The stranger's datagram never reaches the connected socket; the other four are counted.
    assert_eq!(h.metrics.ignored_responses.get(), 4);
}

/// The network may deliver an answer twice. The copy reaches the upstream socket after its
/// query was answered, and the socket serves the next query: the copy fails the id check (the
/// next query has a fresh id) and is not counted as spoofing; every answer is the right one.
#[tokio::test]
async fn late_copies_of_answers_are_ignored_and_not_counted_as_spoofing() {
    let upstream = fake(|query, _via| {
        let real = bytes(&reply(query, vec![a("plain.test.", 30, "192.0.2.30")]));
        vec![
            Step::Send(real.clone()),
            Step::Sleep(Duration::from_millis(5)),
            Step::Send(real),
        ]
    })
    .await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    for _ in 0..5 {
        let answer = udp_ask(h.udp, &query("plain.test.", RecordType::A)).await;
        assert_eq!(ips(&answer), [ip("192.0.2.30")]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.proxy.udp_sockets.idle(), 1, "one socket served them all");
    assert_eq!(h.metrics.ignored_responses.get(), 0);
    assert_eq!(upstream.seen().len(), 5);
}

#[tokio::test]
async fn truncated_answers_are_retried_over_tcp() {
    fn many(owner: &str) -> Vec<Record> {
        (0..150u32)
            .map(|i| a(owner, 60, &Ipv4Addr::from(0xC633_6400 + i).to_string()))
            .collect()
    }
    let upstream = fake(|query, via| {
        let mut r = reply(query, many("big.test."));
        if via == Via::Udp {
            let mut tc = reply(query, vec![]);
            tc.metadata.truncation = true;
            r = tc;
        }
        if let Some(edns) = &query.edns {
            let mut e = Edns::new();
            e.set_max_payload(edns.max_payload());
            r.set_edns(e);
        }
        vec![Step::Send(bytes(&r))]
    })
    .await;
    let h = start(upstream.addr, settings(), Some("ns")).await;

    // A client that accepts 4096 bytes gets the full answer over UDP.
    let big = with_edns(query("big.test.", RecordType::A), 4096);
    let raw = udp_exchange_raw(h.udp, &bytes(&big), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(raw.len() > 512 && raw.len() <= 4096, "{}", raw.len());
    let answer = Message::from_vec(&raw).unwrap();
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 150);
    assert_eq!(answer.metadata.id, big.metadata.id);

    // A client without EDNS (512 bytes) gets the truncated answer, to retry over TCP itself;
    // the cache learned all 150 addresses all the same.
    h.cache.purge(Instant::now() + Duration::from_secs(3600));
    assert!(h.cache.is_empty());
    let small = query("big.test.", RecordType::A);
    let answer = udp_ask(h.udp, &small).await;
    assert!(answer.metadata.truncation);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.metadata.id, small.metadata.id);
    let now = Instant::now();
    for i in 0..150u32 {
        let addr = IpAddr::from(Ipv4Addr::from(0xC633_6400 + i));
        assert!(h.cache.resolved("ns", "big.test", addr, now), "{addr}");
    }
    assert_eq!(h.metrics.truncated_retries.get(), 2);
    let vias: Vec<Via> = upstream.seen().iter().map(|(v, _)| *v).collect();
    assert_eq!(vias, [Via::Udp, Via::Tcp, Via::Udp, Via::Tcp]);

    // The pod's own TCP retry goes to the upstream over TCP directly.
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    tcp_write(&mut stream, &bytes(&small)).await;
    let answer = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    assert_eq!(answer.answers.len(), 150);
}

#[tokio::test]
async fn edns_is_passed_through_byte_for_byte() {
    let upstream = fake(|query, _via| {
        let mut r = reply(query, vec![a("edns.test.", 60, "192.0.2.40")]);
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut()
            .insert(EdnsOption::Unknown(65002, vec![9, 9, 9]));
        r.set_edns(e);
        vec![Step::Send(bytes(&r))]
    })
    .await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let mut q = with_edns(query("edns.test.", RecordType::A), 1400);
    let edns = q.edns.as_mut().unwrap();
    edns.flags_mut().dnssec_ok = true;
    edns.options_mut()
        .insert(EdnsOption::Unknown(65001, vec![1, 2, 3]));
    let sent = bytes(&q);
    let answer = udp_ask(h.udp, &q).await;

    // The upstream got the pod's bytes, only the id differs.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1[2..], sent[2..]);
    let forwarded = Message::from_vec(&seen[0].1).unwrap();
    let fe = forwarded.edns.unwrap();
    assert_eq!(fe.max_payload(), 1400);
    assert!(fe.flags().dnssec_ok);
    assert_eq!(
        fe.option(EdnsCode::from(65001)),
        Some(&EdnsOption::Unknown(65001, vec![1, 2, 3]))
    );
    // And the pod gets the upstream's EDNS unchanged.
    let ae = answer.edns.clone().unwrap();
    assert_eq!(ae.max_payload(), 1232);
    assert_eq!(
        ae.option(EdnsCode::from(65002)),
        Some(&EdnsOption::Unknown(65002, vec![9, 9, 9]))
    );
    assert_eq!(ips(&answer), [ip("192.0.2.40")]);
}

#[tokio::test]
async fn malformed_queries_get_formerr_or_nothing() {
    let upstream = fake(zone).await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let wait = Duration::from_millis(300);

    // A header that promises a question that is not there.
    let header_only = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let raw = udp_exchange_raw(h.udp, &header_only, wait).await.unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.metadata.recursion_desired);

    // Two questions.
    let mut two = query("plain.test.", RecordType::A);
    two.add_query(Query::query(name("www.example.test."), RecordType::A));
    let m = udp_ask(h.udp, &two).await;
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, two.metadata.id);

    // No question at all.
    let mut none = query("plain.test.", RecordType::A);
    none.queries.clear();
    let m = udp_ask(h.udp, &none).await;
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

    // Another opcode.
    let mut notify = query("plain.test.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    let m = udp_ask(h.udp, &notify).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);

    // Not even a header, or a response instead of a query: no answer at all.
    assert_eq!(udp_exchange_raw(h.udp, &[1, 2, 3, 4, 5], wait).await, None);
    let mut resp = query("plain.test.", RecordType::A);
    resp.metadata.message_type = MessageType::Response;
    assert_eq!(udp_exchange_raw(h.udp, &bytes(&resp), wait).await, None);

    // Over TCP, on one connection: FORMERR, then a good query still works.
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    tcp_write(&mut stream, &header_only).await;
    let m = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    tcp_write(&mut stream, &bytes(&query("plain.test.", RecordType::A))).await;
    let m = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    assert_eq!(ips(&m), [ip("192.0.2.30")]);

    assert_eq!(h.count(Transport::Udp, QueryResult::Formerr), 3);
    assert_eq!(h.count(Transport::Udp, QueryResult::Notimp), 1);
    assert_eq!(h.count(Transport::Udp, QueryResult::Dropped), 2);
    assert_eq!(h.count(Transport::Tcp, QueryResult::Formerr), 1);
    // Nothing malformed was forwarded.
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn silent_upstream_gives_servfail_within_the_timeout() {
    let upstream = fake(|_, _| vec![]).await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let timeout = settings().timeout;

    let q = with_edns(query("plain.test.", RecordType::A), 1232);
    let started = Instant::now();
    let m = udp_ask(h.udp, &q).await;
    let took = started.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_eq!(m.queries, q.queries);
    assert!(m.edns.is_some(), "EDNS in, EDNS out");
    assert!(took >= timeout - Duration::from_millis(50), "{took:?}");
    assert!(took < timeout + Duration::from_millis(1000), "{took:?}");

    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    let started = Instant::now();
    tcp_write(&mut stream, &bytes(&q)).await;
    let m = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    let took = started.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(took < timeout + Duration::from_millis(1000), "{took:?}");

    assert_eq!(h.count(Transport::Udp, QueryResult::Servfail), 1);
    assert_eq!(h.count(Transport::Tcp, QueryResult::Servfail), 1);
    assert!(h.cache.is_empty());
}

/// One upstream socket serves one query at a time and is kept for the next, at most
/// `MAX_SOCKET_USES` times; a socket whose exchange failed is not kept.
#[tokio::test]
async fn upstream_sockets_are_reused_a_bounded_number_of_times() {
    let upstream = fake(zone).await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let q = query("plain.test.", RecordType::A);
    for _ in 0..3 {
        assert_eq!(
            udp_ask(h.udp, &q).await.metadata.response_code,
            ResponseCode::NoError
        );
    }
    assert_eq!(
        h.proxy.udp_sockets.idle(),
        1,
        "sequential queries share one socket"
    );
    for _ in 3..super::upstream::MAX_SOCKET_USES {
        udp_ask(h.udp, &q).await;
    }
    assert_eq!(h.proxy.udp_sockets.idle(), 0, "closed after its last use");
    udp_ask(h.udp, &q).await;
    assert_eq!(h.proxy.udp_sockets.idle(), 1, "a new one");
    let ids: std::collections::HashSet<u16> = upstream
        .seen()
        .iter()
        .map(|(_, raw)| u16::from_be_bytes([raw[0], raw[1]]))
        .collect();
    assert!(
        ids.len() > 60,
        "a fresh id per query: {} distinct",
        ids.len()
    );

    let silent = fake(|_, _| vec![]).await;
    let h = start(silent.addr, settings(), Some("ns")).await;
    assert_eq!(
        udp_ask(h.udp, &q).await.metadata.response_code,
        ResponseCode::ServFail
    );
    assert_eq!(
        h.proxy.udp_sockets.idle(),
        0,
        "a failed exchange's socket is not kept"
    );
}

#[tokio::test]
async fn upstream_down_gives_servfail_fast() {
    // A port nobody listens on (UDP and TCP): ICMP port unreachable and TCP RST.
    let dead = {
        let s = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
        s.local_addr().unwrap()
    };
    let h = start(
        dead,
        DnsSettings {
            timeout: Duration::from_secs(5),
            ..settings()
        },
        Some("ns"),
    )
    .await;
    let started = Instant::now();
    let m = udp_ask(h.udp, &query("plain.test.", RecordType::A)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    tcp_write(&mut stream, &bytes(&query("plain.test.", RecordType::A))).await;
    let m = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unparseable_upstream_answer_is_released_unrecorded() {
    let upstream = fake(|query, _| {
        let mut raw = bytes(&reply(query, vec![a("plain.test.", 60, "192.0.2.30")]));
        raw.truncate(raw.len() - 3);
        vec![Step::Send(raw)]
    })
    .await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let q = query("plain.test.", RecordType::A);
    let raw = udp_exchange_raw(h.udp, &bytes(&q), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(Message::from_vec(&raw).is_err());
    assert_eq!(crate::wire::id_of(&raw), Some(q.metadata.id));
    assert!(h.cache.is_empty());
    assert_eq!(h.metrics.unparsed_answers.get(), 1);
}

#[tokio::test]
async fn tcp_carries_several_queries_per_connection() {
    let upstream = fake(|query, via| {
        let mut steps = vec![];
        // Make the first query slow so that the answers come back out of order.
        if query.queries[0].name == name("www.example.test.") {
            steps.push(Step::Sleep(Duration::from_millis(100)));
        }
        steps.extend(zone(query, via));
        steps
    })
    .await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    let mut q1 = query("www.example.test.", RecordType::A);
    let mut q2 = query("plain.test.", RecordType::A);
    q1.metadata.id = 1;
    q2.metadata.id = 2;
    // Both queries in one write.
    let mut both = Vec::new();
    for q in [&q1, &q2] {
        let b = bytes(q);
        both.extend_from_slice(&(b.len() as u16).to_be_bytes());
        both.extend_from_slice(&b);
    }
    stream.write_all(&both).await.unwrap();
    let first = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    let second = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    assert_eq!(first.metadata.id, 2, "the fast answer is not held back");
    assert_eq!(ips(&first), [ip("192.0.2.30")]);
    assert_eq!(second.metadata.id, 1);
    assert_eq!(ips(&second), [ip("192.0.2.10"), ip("192.0.2.11")]);

    // A third, after the others, on the same connection.
    tcp_write(
        &mut stream,
        &bytes(&query("www.example.test.", RecordType::AAAA)),
    )
    .await;
    let third = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
    assert_eq!(ips(&third), [ip("2001:db8::10")]);
    assert_eq!(h.count(Transport::Tcp, QueryResult::Ok), 3);
    // One verdict for the connection.
    assert_eq!(h.policy.calls.lock().unwrap().len(), 1);

    // Closing our side ends the connection cleanly.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let upstream = fake(zone).await;
    let h = start(
        upstream.addr,
        DnsSettings {
            tcp_idle_timeout: Duration::from_millis(200),
            ..settings()
        },
        Some("ns"),
    )
    .await;
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    let mut rest = Vec::new();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("connection not closed")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn denied_flows_are_not_answered() {
    let upstream = fake(zone).await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    h.policy.allow.store(false, Ordering::SeqCst);

    let q = query("plain.test.", RecordType::A);
    assert_eq!(
        udp_exchange_raw(h.udp, &bytes(&q), Duration::from_millis(300)).await,
        None
    );
    let mut stream = TcpStream::connect(h.tcp).await.unwrap();
    tcp_write(&mut stream, &bytes(&q)).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("denied connection not closed");
    assert!(rest.is_empty());
    assert_eq!(h.count(Transport::Udp, QueryResult::Denied), 1);
    assert_eq!(h.count(Transport::Tcp, QueryResult::Denied), 1);
    assert!(upstream.seen().is_empty());
    assert!(h.cache.is_empty());
}

#[tokio::test]
async fn over_the_in_flight_limit_udp_queries_are_dropped() {
    let upstream = fake(|_, _| vec![]).await;
    let h = start(
        upstream.addr,
        DnsSettings {
            max_in_flight: 1,
            ..settings()
        },
        Some("ns"),
    )
    .await;
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    for _ in 0..3 {
        socket
            .send_to(&bytes(&query("plain.test.", RecordType::A)), h.udp)
            .await
            .unwrap();
    }
    let mut buf = vec![0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().metadata.response_code,
        ResponseCode::ServFail
    );
    assert_eq!(h.count(Transport::Udp, QueryResult::Dropped), 2);
}

#[test]
fn arbitrary_queries_never_panic_the_core() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (upstream, h) = rt.block_on(async {
        let upstream = fake(zone).await;
        let h = start(
            upstream.addr,
            DnsSettings {
                timeout: Duration::from_millis(100),
                ..settings()
            },
            Some("ns"),
        )
        .await;
        (upstream, h)
    });
    let valid = bytes(&with_edns(query("www.example.test.", RecordType::A), 1232));
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6).prop_map(
            move |flips| {
                let mut b = valid.clone();
                for (at, v) in flips {
                    let i = at.index(b.len());
                    b[i] = v;
                }
                b
            }
        ),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |input| {
            for transport in [Transport::Udp, Transport::Tcp] {
                let reply = rt.block_on(h.proxy.answer(
                    input.clone(),
                    SocketAddr::from(([127, 0, 0, 1], 5353)),
                    transport,
                ));
                if let Some(reply) = reply {
                    // Whatever goes back is a DNS response with the pod's id.
                    prop_assert!(reply.len() >= 12);
                    prop_assert_eq!(&reply[..2], &input[..2]);
                    prop_assert!(crate::wire::is_response(&reply));
                }
            }
            Ok(())
        })
        .unwrap();
    drop(h);
    drop(upstream);
}

#[tokio::test]
async fn https_and_svcb_queries_of_pods_under_name_rules_get_no_data() {
    // The upstream answers every query with data (a stand-in for an HTTPS record and its
    // ECH configuration).
    let upstream = fake(|query: &Message, _via| {
        let record = a(&query.queries[0].name.to_ascii(), 60, "192.0.2.1");
        vec![Step::Send(bytes(&reply(query, vec![record])))]
    })
    .await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    h.policy.names_apply.store(true, Ordering::SeqCst);
    for qtype in [RecordType::HTTPS, RecordType::SVCB] {
        let q = with_edns(query("Shop.Example.Test.", qtype), 1232);
        let answer = udp_ask(h.udp, &q).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.metadata.id, q.metadata.id);
        assert!(answer.answers.is_empty(), "{qtype}: {answer:?}");
        assert_eq!(answer.queries, q.queries);
        // Over TCP too.
        let mut stream = TcpStream::connect(h.tcp).await.unwrap();
        tcp_write(&mut stream, &bytes(&q)).await;
        let answer = Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.answers.is_empty(), "{qtype}: {answer:?}");
    }
    assert!(upstream.seen().is_empty(), "never forwarded");
    assert_eq!(h.count(Transport::Udp, QueryResult::Withheld), 2);
    assert_eq!(h.count(Transport::Tcp, QueryResult::Withheld), 2);
    // Other types are forwarded as usual.
    let answer = udp_ask(h.udp, &query("plain.test.", RecordType::A)).await;
    assert_eq!(ips(&answer), [ip("192.0.2.1")]);

    // A pod no name rule applies to gets the record.
    h.policy.names_apply.store(false, Ordering::SeqCst);
    let answer = udp_ask(h.udp, &query("shop.example.test.", RecordType::HTTPS)).await;
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
}

/// Queries the kernel dropped because a TPROXY listener's receive buffer was full are counted
/// (`chokepoint_dns_receive_overflows_total`): with those read, every datagram sent is
/// accounted for. Needs `CAP_NET_ADMIN` (`IP_TRANSPARENT`): run as root, like the netns suites.
#[tokio::test]
async fn queries_the_kernel_dropped_unread_are_counted() {
    use chokepoint_redirect::sockopt;
    let upstream = fake(zone).await;
    let h = start(upstream.addr, settings(), Some("ns")).await;
    let listener = sockopt::transparent_udp_socket_shared((LOOPBACK, 0).into()).unwrap();
    sockopt::set_receive_buffer(&listener, 4096).unwrap();
    let to = listener.local_addr().unwrap();
    let pod = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
    // No DNS header: each one read is counted as dropped by the proxy, none is forwarded.
    const SENT: u64 = 500;
    for _ in 0..SENT {
        pod.send_to(b"burst", to).unwrap();
    }
    let socket = UdpSocket::from_std(listener).unwrap();
    tokio::spawn(
        h.proxy
            .clone()
            .serve_udp(socket, UdpMode::Transparent, std::future::pending()),
    );
    let read = || h.count(Transport::Udp, QueryResult::Dropped);
    // Until the proxy has read all that was queued.
    let mut before = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if read() > 0 && read() == before {
            break;
        }
        before = read();
    }
    assert!(
        before > 0 && before < SENT,
        "a 4 KiB buffer holds some: {before}"
    );
    // The kernel stamps its count on the next datagram it queues.
    pod.send_to(b"after", to).unwrap();
    until(|| read() > before).await;
    let dropped = h.metrics.receive_overflows.get();
    assert!(dropped > 0);
    assert_eq!(read() + dropped, SENT + 1);
    assert!(upstream.seen().is_empty());
}

/// Waits (at most 5 s) until `done`.
async fn until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
