//! What every parser of bytes a pod controls must hold, one check per parser, on any input:
//! no panic, no hang, and the invariant named in each function. The cargo-fuzz targets under
//! `fuzz/` feed them the fuzzer's inputs (`scripts/fuzz.sh`); `gateway/tests/it/parsers.rs` runs
//! them over the seed corpus (`fuzz/seeds/`) and a fixed-seed mutation loop in every
//! `cargo test`. A check panics when its invariant breaks, which is what a fuzzer reports.

use std::sync::Arc;
use std::time::Duration;

use chokepoint_config::settings::MetadataSettings;
use chokepoint_dns::proxy::{Triage, triage};
use chokepoint_dns::wire;
use http_body_util::Empty;
use hyper::Response;
use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::l7::{http, peek, tls};
use crate::metadata::decide::decide;
use crate::metadata::handler::http1_builder;
use crate::metadata::identity::{Who, is_identity_header, strip_identity};
use crate::metadata::{MetadataConfig, paths};

/// One check: panics when its parser breaks an invariant on `data`.
pub type Check = fn(&[u8]);

/// The checks by name: the cargo-fuzz target of each has the same name.
pub const TARGETS: [(&str, Check); 5] = [
    ("client_hello", client_hello),
    ("http_head", http_head),
    ("dns_query", dns_query),
    ("dns_answer", dns_answer),
    ("metadata_request", metadata_request),
];

/// The TLS ClientHello parser: a complete hello's verdict does not change when more bytes
/// follow, and the peek's verdict agrees with the parser's.
pub fn client_hello(data: &[u8]) {
    let full = tls::parse(data);
    if let tls::ClientHello::Hello { .. } = &full {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
        assert_eq!(tls::parse(&more), full, "bytes after a hello changed it");
        assert!(
            peek::judge(data).is_some(),
            "a complete hello left undecided"
        );
    }
    let mut record = vec![22u8, 3, 1];
    record.extend_from_slice(data);
    let _ = tls::parse(&record);
    let _ = peek::judge(&record);
}

/// The HTTP/1.x head parser: a complete head's verdict does not change when a body (or the
/// next request) follows, and the request-target's authority, when there is one, is a name
/// in the same form as a Host.
pub fn http_head(data: &[u8]) {
    let full = http::parse(data);
    if let http::Request::Head { .. } = &full {
        let mut more = data.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n");
        assert_eq!(http::parse(&more), full, "bytes after a head changed it");
        // The head sent upstream says the same and asks to close, before any other line.
        let end = http::head_len(data).expect("a complete head has an end");
        let closing = http::closing_head(&data[..end]);
        assert_eq!(
            http::parse(&closing),
            full,
            "the closing head says otherwise"
        );
        assert_eq!(http::head_len(&closing), Some(closing.len()));
        let second_line = closing.split(|b| *b == b'\n').nth(1).expect("two lines");
        assert_eq!(second_line, b"Connection: close\r");
    }
    let mut request = b"GET / HTTP/1.1\r\nHost: ".to_vec();
    request.extend_from_slice(data);
    let _ = http::parse(&request);
    let _ = peek::judge(&request);
}

/// The DNS proxy's handling of a pod's query before it is forwarded: what it answers itself
/// carries the query's id and is a response; what it forwards has exactly one question, and
/// the answers it would make of it parse back.
pub fn dns_query(data: &[u8]) {
    match triage(data) {
        Triage::Settled(None, _) => {}
        Triage::Settled(Some(reply), _) => {
            assert_eq!(wire::id_of(&reply), wire::id_of(data), "reply id");
            assert!(wire::is_response(&reply), "the reply is no response");
        }
        Triage::Forward(message) => {
            assert_eq!(message.queries.len(), 1);
            for code in [
                hickory_proto::op::ResponseCode::ServFail,
                hickory_proto::op::ResponseCode::NoError,
            ] {
                let reply = wire::error_response(&message, code);
                assert!(wire::is_response(&reply));
                assert_eq!(wire::id_of(&reply), wire::id_of(data));
            }
            let _ = wire::client_udp_limit(&message);
            let mut copy = data.to_vec();
            wire::set_id(&mut copy, 0x1234);
            assert_eq!(wire::id_of(&copy), Some(0x1234));
        }
    }
}

/// What the proxy learns from an upstream answer (whose content an attacker's zone controls):
/// the match against the query never panics, and an observation names the question only.
pub fn dns_answer(data: &[u8]) {
    let Ok(message) = hickory_proto::op::Message::from_vec(data) else {
        assert!(chokepoint_dns::observe_bytes(data).is_err());
        return;
    };
    let observation = chokepoint_dns::observe(&message);
    if !observation.is_empty() {
        let question = chokepoint_dns::answer::normalize_name(&message.queries[0].name);
        assert_eq!(question.as_deref(), Some(&*observation.name));
    }
    if let (Some(id), Some(question)) = (wire::id_of(data), message.queries.first()) {
        let _ = wire::check_response(data, id, question);
    }
}

/// A request to the metadata server, through the same HTTP/1 server the handler runs and the
/// handler's checks: no identity header of the pod's survives (whatever its spelling), and
/// the server answers or closes within a bound.
pub fn metadata_request(data: &[u8]) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
        static CONFIG: Arc<MetadataConfig> = Arc::new(MetadataConfig::new(&MetadataSettings::default()));
    }
    let config = CONFIG.with(Arc::clone);
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let (mut pod, server) = tokio::io::duplex(1 << 20);
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let config = config.clone();
                async move {
                    let (mut parts, _body) = request.into_parts();
                    let _ = decide(&config, &Who::Unknown, &parts);
                    let _ = paths::segments(&parts.uri);
                    strip_identity(&mut parts.headers);
                    for name in parts.headers.keys() {
                        assert!(!is_identity_header(name.as_str()), "{name} survived");
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
                }
            });
            let connection = http1_builder(&CONFIG.with(Arc::clone))
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            let client = async {
                // The pod may stop reading at any point; only the server's behaviour matters.
                let _ = pod.write_all(data).await;
                let _ = pod.shutdown().await;
                let mut sink = Vec::new();
                let _ = pod.read_to_end(&mut sink).await;
            };
            let both = async { tokio::join!(connection, client) };
            assert!(
                tokio::time::timeout(Duration::from_secs(10), both)
                    .await
                    .is_ok(),
                "the metadata server neither answered nor closed"
            );
        });
    });
}
