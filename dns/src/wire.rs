//! Small wire-format helpers: error responses, the client's UDP size, and checking that an
//! upstream datagram is the answer to the query that was sent.

use hickory_proto::op::{Edns, Header, Message, MessageType, Query, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;

/// EDNS payload size advertised in the proxy's own error responses (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;

/// The id of a message with at least a header.
pub fn id_of(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

/// Overwrites the id of a message with at least a header.
pub fn set_id(message: &mut [u8], id: u16) {
    if message.len() >= 2 {
        message[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// Whether the QR bit says "response".
pub fn is_response(message: &[u8]) -> bool {
    message.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// FORMERR for a query that has a header but cannot be parsed: the same id, opcode and RD
/// bit, no sections (its question cannot be trusted to be echoed). `None` when there is not
/// even a header: such a datagram is dropped.
pub fn formerr_header(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN {
        return None;
    }
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&query[..2]);
    // QR=1, opcode and RD copied; RA=1; RCODE=FORMERR.
    out[2] = 0x80 | (query[2] & 0x78) | (query[2] & 0x01);
    out[3] = 0x80 | ResponseCode::FormErr.low();
    Some(out)
}

/// An error response to a parsed query: its id, opcode, RD and CD bits, RA set, its
/// question(s) echoed, and an OPT record when the query had one.
pub fn error_response(query: &Message, code: ResponseCode) -> Vec<u8> {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.checking_disabled = query.metadata.checking_disabled;
    response.metadata.recursion_available = true;
    response.metadata.response_code = code;
    response.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    response.to_vec().unwrap_or_else(|_| {
        let mut out = vec![0u8; HEADER_LEN];
        out[..2].copy_from_slice(&query.metadata.id.to_be_bytes());
        out[2] = 0x80 | (u8::from(query.metadata.op_code) << 3 & 0x78);
        out[3] = 0x80 | code.low();
        out
    })
}

/// The largest UDP answer the client accepts: its EDNS payload size, at least 512.
pub fn client_udp_limit(query: &Message) -> usize {
    usize::from(query.max_payload())
}

/// Why an upstream message is not the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Not even a header and a question.
    Malformed,
    /// QR is not set.
    NotAResponse,
    WrongId,
    /// Not exactly one question, or a different name, type or class.
    WrongQuestion,
}

/// The header facts the proxy needs from an answer that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    /// TC bit.
    pub truncated: bool,
}

/// Checks that `response` answers the query with this id and question: QR set, same id,
/// exactly one question with the same name (DNS case-insensitive), type and class. Only the
/// header and the question are read, so a truncated answer cut mid-record still matches.
pub fn check_response(response: &[u8], id: u16, question: &Query) -> Result<Matched, Mismatch> {
    let mut decoder = BinDecoder::new(response);
    let header = Header::read(&mut decoder).map_err(|_| Mismatch::Malformed)?;
    if header.metadata.id != id {
        return Err(Mismatch::WrongId);
    }
    if header.metadata.message_type != MessageType::Response {
        return Err(Mismatch::NotAResponse);
    }
    if header.counts.queries != 1 {
        return Err(Mismatch::WrongQuestion);
    }
    let echoed = Query::read(&mut decoder).map_err(|_| Mismatch::Malformed)?;
    if echoed.name != question.name
        || echoed.query_type != question.query_type
        || echoed.query_class != question.query_class
    {
        return Err(Mismatch::WrongQuestion);
    }
    Ok(Matched {
        truncated: header.metadata.truncation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::{Name, RecordType};
    use proptest::prelude::*;

    fn query(name: &str, edns: bool) -> Message {
        let mut m = Message::query();
        m.metadata.id = 0xBEEF;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii(name).unwrap(),
            RecordType::AAAA,
        ));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4000);
            m.set_edns(e);
        }
        m
    }

    #[test]
    fn formerr_keeps_id_opcode_and_rd() {
        assert_eq!(formerr_header(&[1, 2, 3]), None);
        let out = formerr_header(&[0xAB, 0xCD, 0x01, 0, 0, 5, 0, 0, 0, 0, 0, 0, 9]).unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0xABCD);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.metadata.recursion_desired);
        assert!(m.queries.is_empty());
    }

    #[test]
    fn error_response_echoes_question_and_edns() {
        let q = query("Host.Example.", true);
        let m = Message::from_vec(&error_response(&q, ResponseCode::ServFail)).unwrap();
        assert_eq!(m.metadata.id, 0xBEEF);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.metadata.op_code, OpCode::Query);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert_eq!(m.queries, q.queries);
        assert_eq!(m.edns.unwrap().max_payload(), EDNS_PAYLOAD);
        let m =
            Message::from_vec(&error_response(&query("a.", false), ResponseCode::NotImp)).unwrap();
        assert!(m.edns.is_none());
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    }

    #[test]
    fn client_limits() {
        assert_eq!(client_udp_limit(&query("a.", false)), 512);
        assert_eq!(client_udp_limit(&query("a.", true)), 4000);
    }

    #[test]
    fn response_matching() {
        let q = query("host.example.", false);
        let question = &q.queries[0];
        let mut r = q.clone();
        r.metadata.message_type = MessageType::Response;
        let bytes = r.to_vec().unwrap();
        assert_eq!(
            check_response(&bytes, 0xBEEF, question),
            Ok(Matched { truncated: false })
        );
        assert_eq!(
            check_response(&bytes, 0xBEEE, question),
            Err(Mismatch::WrongId)
        );
        assert_eq!(
            check_response(&q.to_vec().unwrap(), 0xBEEF, question),
            Err(Mismatch::NotAResponse)
        );
        assert_eq!(
            check_response(&bytes[..12], 0xBEEF, question),
            Err(Mismatch::Malformed)
        );

        let mut other = r.clone();
        other.queries[0].query_type = RecordType::A;
        assert_eq!(
            check_response(&other.to_vec().unwrap(), 0xBEEF, question),
            Err(Mismatch::WrongQuestion)
        );
        let mut other = r.clone();
        other.queries[0].name = Name::from_ascii("evil.example.").unwrap();
        assert_eq!(
            check_response(&other.to_vec().unwrap(), 0xBEEF, question),
            Err(Mismatch::WrongQuestion)
        );
        let mut other = r.clone();
        other.queries.clear();
        assert_eq!(
            check_response(&other.to_vec().unwrap(), 0xBEEF, question),
            Err(Mismatch::WrongQuestion)
        );
        // Case differences (0x20) are the same question.
        let mut other = r.clone();
        other.queries[0].name = Name::from_ascii("HoSt.ExAmPlE.").unwrap();
        other.metadata.truncation = true;
        assert_eq!(
            check_response(&other.to_vec().unwrap(), 0xBEEF, question),
            Ok(Matched { truncated: true })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn helpers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u16>()) {
            let q = query("host.example.", true);
            let _ = check_response(&bytes, id, &q.queries[0]);
            let _ = formerr_header(&bytes);
            let _ = id_of(&bytes);
            let _ = is_response(&bytes);
            if let Ok(m) = Message::from_vec(&bytes) {
                let _ = error_response(&m, ResponseCode::ServFail);
                let _ = client_udp_limit(&m);
            }
        }
    }
}
