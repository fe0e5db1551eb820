//! What one DNS response teaches: the queried name, the CNAME chain inside the response, and
//! the final A/AAAA addresses, with the smallest TTL on the way.
//!
//! Only the chain that starts at the question is followed, and only inside this one response
//! (NPEP-133 §8: no chasing, no correlation across responses). Records for names off the chain
//! are ignored, so an answer to `a.example` cannot teach anything about `bank.example`.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData};

use crate::Error;

/// Longest CNAME chain followed (RFC 1034 resolvers typically stop at 8–16).
pub const MAX_CHAIN: usize = 16;

/// What a response teaches: every name in [`names`](Self::names) resolves to every address
/// in [`ips`](Self::ips) for [`ttl`](Self::ttl) seconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// The queried name first, then each CNAME target in chain order; lower-case, without the
    /// trailing dot. Empty when nothing was learned.
    pub names: Vec<Arc<str>>,
    /// The final A and AAAA addresses, deduplicated, in answer order.
    pub ips: Vec<IpAddr>,
    /// The minimum TTL over the CNAME records of the chain and the final address records.
    pub ttl: u32,
}

impl Observation {
    /// Whether nothing was learned (no addresses at the end of the chain).
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }
}

/// Parses a response and extracts its [`Observation`]. Malformed bytes are an error, never a
/// panic. A well-formed response that teaches nothing (an error code, no question, a chain
/// without addresses, a query instead of a response) gives an empty observation.
pub fn observe_bytes(response: &[u8]) -> Result<Observation, Error> {
    let message = Message::from_vec(response).map_err(Error::Malformed)?;
    Ok(observe(&message))
}

/// Extracts the [`Observation`] of a parsed response; see the [module docs](self).
pub fn observe(message: &Message) -> Observation {
    if message.metadata.message_type != MessageType::Response
        || message.metadata.response_code != ResponseCode::NoError
    {
        return Observation::default();
    }
    let [query] = message.queries.as_slice() else {
        return Observation::default();
    };
    if query.query_class != DNSClass::IN {
        return Observation::default();
    }
    let mut chain: Vec<&Name> = vec![&query.name];
    let mut ttl = u32::MAX;
    // Follow CNAMEs from the question's name; stop at a loop or at MAX_CHAIN.
    while chain.len() <= MAX_CHAIN {
        let current = chain[chain.len() - 1];
        let next = message.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.dns_class == DNSClass::IN && r.name == *current => {
                Some((&target.0, r.ttl))
            }
            _ => None,
        });
        let Some((target, cname_ttl)) = next else {
            break;
        };
        if chain.contains(&target) {
            return Observation::default();
        }
        ttl = ttl.min(cname_ttl);
        chain.push(target);
    }
    let last = chain[chain.len() - 1];
    let mut ips: Vec<IpAddr> = Vec::new();
    for record in &message.answers {
        if record.dns_class != DNSClass::IN || record.name != *last {
            continue;
        }
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        ttl = ttl.min(record.ttl);
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Observation::default();
    }
    let mut names: Vec<Arc<str>> = Vec::with_capacity(chain.len());
    for name in chain {
        if let Some(text) = normalize_name(name)
            && !names.iter().any(|n| **n == *text)
        {
            names.push(text.into());
        }
    }
    if names.is_empty() {
        return Observation::default();
    }
    Observation { names, ips, ttl }
}

/// A name as the cache keys it: ASCII (IDNA labels stay `xn--`), lower-case, no trailing dot.
/// `None` for the root.
pub fn normalize_name(name: &Name) -> Option<String> {
    let text = name.to_lowercase().to_ascii();
    let text = text.strip_suffix('.').unwrap_or(&text);
    (!text.is_empty()).then(|| text.to_string())
}

/// The same normalization for a name given as text (a pattern-matched name, an SNI, a Host):
/// ASCII lower-case, one trailing dot removed.
pub fn normalize_text(name: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
    use hickory_proto::rr::{Record, RecordType};
    use proptest::prelude::*;

    pub(crate) fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    pub(crate) fn response(qname: &str, qtype: RecordType, answers: Vec<Record>) -> Message {
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(name(qname), qtype));
        m.add_answers(answers);
        m
    }

    pub(crate) fn a(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
    }

    pub(crate) fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
    }

    pub(crate) fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn names(o: &Observation) -> Vec<&str> {
        o.names.iter().map(|n| &**n).collect()
    }

    #[test]
    fn a_and_aaaa_records_of_the_question() {
        let m = response(
            "WWW.Example.COM.",
            RecordType::A,
            vec![
                a("www.example.com.", 300, "192.0.2.1"),
                a("www.example.com.", 200, "192.0.2.2"),
                aaaa("www.example.com.", 250, "2001:db8::1"),
                a("www.example.com.", 300, "192.0.2.1"),
            ],
        );
        let o = observe_bytes(&m.to_vec().unwrap()).unwrap();
        assert_eq!(names(&o), ["www.example.com"]);
        assert_eq!(
            o.ips,
            [
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "192.0.2.2".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(o.ttl, 200);
    }

    #[test]
    fn cname_chain_maps_every_name_to_the_final_ips_with_the_minimum_ttl() {
        let m = response(
            "api.example.com.",
            RecordType::A,
            vec![
                // Out of order on purpose, and mixed case.
                a("edge.CDN.example.net.", 300, "198.51.100.7"),
                cname("api.example.com.", 600, "api.example.cdn.example.net."),
                cname("api.example.cdn.example.net.", 60, "edge.cdn.example.net."),
                // Off the chain: must not be attributed to anything.
                a("bank.example.org.", 1, "203.0.113.9"),
            ],
        );
        let o = observe(&m);
        assert_eq!(
            names(&o),
            [
                "api.example.com",
                "api.example.cdn.example.net",
                "edge.cdn.example.net"
            ]
        );
        assert_eq!(o.ips, ["198.51.100.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(o.ttl, 60);
    }

    #[test]
    fn addresses_of_an_intermediate_name_are_not_the_answer() {
        // A CNAME for the question wins over A records at the same owner (invalid zone data).
        let m = response(
            "a.example.",
            RecordType::A,
            vec![
                a("a.example.", 300, "192.0.2.1"),
                cname("a.example.", 300, "b.example."),
                a("b.example.", 30, "192.0.2.2"),
            ],
        );
        let o = observe(&m);
        assert_eq!(names(&o), ["a.example", "b.example"]);
        assert_eq!(o.ips, ["192.0.2.2".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn nothing_is_learned_from_loops_dead_ends_errors_and_queries() {
        let looped = response(
            "a.example.",
            RecordType::A,
            vec![
                cname("a.example.", 300, "b.example."),
                cname("b.example.", 300, "a.example."),
                a("a.example.", 300, "192.0.2.1"),
            ],
        );
        assert!(observe(&looped).is_empty());

        let dead_end = response(
            "a.example.",
            RecordType::A,
            vec![cname("a.example.", 300, "b.example.")],
        );
        assert!(observe(&dead_end).is_empty());

        let mut nx = response(
            "a.example.",
            RecordType::A,
            vec![a("a.example.", 1, "192.0.2.1")],
        );
        nx.metadata.response_code = ResponseCode::NXDomain;
        assert!(observe(&nx).is_empty());

        let mut q = response(
            "a.example.",
            RecordType::A,
            vec![a("a.example.", 1, "192.0.2.1")],
        );
        q.metadata.message_type = MessageType::Query;
        assert!(observe(&q).is_empty());

        let mut chaos = response("a.example.", RecordType::A, vec![]);
        chaos.queries[0].query_class = DNSClass::CH;
        chaos.add_answer(a("a.example.", 1, "192.0.2.1"));
        assert!(observe(&chaos).is_empty());

        let no_question = Message::response(1, OpCode::Query);
        assert!(observe(&no_question).is_empty());

        let txt = response(
            "a.example.",
            RecordType::TXT,
            vec![Record::from_rdata(
                name("a.example."),
                1,
                RData::TXT(TXT::new(vec!["192.0.2.1".into()])),
            )],
        );
        assert!(observe(&txt).is_empty());
    }

    #[test]
    fn chain_longer_than_the_limit_stops_there() {
        let mut answers = Vec::new();
        for i in 0..(MAX_CHAIN + 5) {
            answers.push(cname(
                &format!("n{i}.example."),
                100,
                &format!("n{}.example.", i + 1),
            ));
        }
        answers.push(a(&format!("n{}.example.", MAX_CHAIN + 5), 100, "192.0.2.1"));
        let o = observe(&response("n0.example.", RecordType::A, answers));
        assert!(o.is_empty(), "{o:?}");
        // Exactly MAX_CHAIN CNAMEs are still followed.
        let mut answers = Vec::new();
        for i in 0..MAX_CHAIN {
            answers.push(cname(
                &format!("n{i}.example."),
                100,
                &format!("n{}.example.", i + 1),
            ));
        }
        answers.push(a(&format!("n{MAX_CHAIN}.example."), 100, "192.0.2.1"));
        let o = observe(&response("n0.example.", RecordType::A, answers));
        assert_eq!(o.names.len(), MAX_CHAIN + 1);
    }

    #[test]
    fn many_addresses_are_all_kept() {
        let answers = (0..150u32)
            .map(|i| {
                a(
                    "big.example.",
                    60,
                    &std::net::Ipv4Addr::from(0xC633_6400 + i).to_string(),
                )
            })
            .collect();
        let o = observe(&response("big.example.", RecordType::A, answers));
        assert_eq!(o.ips.len(), 150);
    }

    #[test]
    fn malformed_bytes_are_errors() {
        assert!(observe_bytes(&[]).is_err());
        assert!(observe_bytes(&[0; 11]).is_err());
        let mut bytes = response(
            "a.example.",
            RecordType::A,
            vec![a("a.example.", 1, "192.0.2.1")],
        )
        .to_vec()
        .unwrap();
        bytes.truncate(bytes.len() - 2);
        assert!(observe_bytes(&bytes).is_err());
    }

    #[test]
    fn text_normalization() {
        assert_eq!(normalize_text("Api.Example.COM."), "api.example.com");
        assert!(matches!(
            normalize_text("api.example.com"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(normalize_name(&Name::root()), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = observe_bytes(&bytes);
        }

        #[test]
        fn mutated_responses_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = response(
                "a.example.",
                RecordType::A,
                vec![cname("a.example.", 9, "b.example."), a("b.example.", 5, "192.0.2.1")],
            )
            .to_vec()
            .unwrap();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let keep = cut.index(bytes.len() + 1);
            let _ = observe_bytes(&bytes[..keep.max(bytes.len() / 2)]);
        }
    }
}
