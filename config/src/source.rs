//! YAML (and JSON) documents with the position of every node.
//!
//! Validation works on typed objects but must point at `file:line:column`. serde-saphyr
//! reports positions only for its own parse errors, so each document is first read into a
//! tree of [`Spanned`] nodes, then flattened into a `serde_json::Value` plus a table from JSON
//! pointer (`/spec/egress/0/to`) to the position of that node.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// Line and column (both 1-based) of a node in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl From<serde_saphyr::Location> for Position {
    fn from(l: serde_saphyr::Location) -> Self {
        Position {
            line: l.line(),
            column: l.column(),
        }
    }
}

/// One document: its value and where each of its nodes stands.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    positions: HashMap<String, Position>,
}

impl Document {
    /// The position of the node at `pointer`, or of its nearest ancestor that exists
    /// (a missing field is reported where its parent stands).
    pub fn position(&self, pointer: &str) -> Position {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Position::default(),
            }
        }
    }

    /// False for a document made with [`Document::from_value`]: it has no positions.
    pub fn has_positions(&self) -> bool {
        !self.positions.is_empty()
    }

    /// A document made from a value alone (tests, objects that came without a file).
    pub fn from_value(value: Value) -> Self {
        Document {
            value,
            positions: HashMap::new(),
        }
    }
}

/// A syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub position: Position,
    pub message: String,
}

/// Parses every document of a YAML or JSON text. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let nodes: Vec<Spanned<Node>> =
        serde_saphyr::from_str_multiple(text).map_err(|e| SyntaxError {
            position: e.location().map(Position::from).unwrap_or_default(),
            message: user_message(&e.without_snippet().to_string()),
        })?;
    Ok(nodes
        .into_iter()
        .map(|node| {
            let mut positions = HashMap::new();
            let mut pointer = String::new();
            positions.insert(String::new(), node.referenced.into());
            let value = flatten(node.value, &mut pointer, &mut positions);
            Document { value, positions }
        })
        .collect())
}

/// The parser's message without what the diagnostic already says (the position) or what only
/// a programmer could act on (parser options).
fn user_message(raw: &str) -> String {
    let mut m = raw.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    if let Some(i) = m.rfind(" at line ")
        && m[i + 9..]
            .split(", column ")
            .all(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        m.truncate(i);
    }
    m
}

fn flatten(node: Node, pointer: &mut String, positions: &mut HashMap<String, Position>) -> Value {
    match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Number(Number::from(i)),
        Node::Uint(u) => Value::Number(Number::from(u)),
        Node::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                positions.insert(pointer.clone(), item.referenced.into());
                out.push(flatten(item.value, pointer, positions));
                pointer.truncate(len);
            }
            Value::Array(out)
        }
        Node::Map(entries) => {
            let mut out = Map::new();
            for (key, value) in entries {
                let len = pointer.len();
                pointer.push('/');
                // JSON pointer escaping (RFC 6901).
                pointer.push_str(&key.value.0.replace('~', "~0").replace('/', "~1"));
                positions.insert(pointer.clone(), key.referenced.into());
                let v = flatten(value.value, pointer, positions);
                out.insert(key.value.0, v);
                pointer.truncate(len);
            }
            Value::Object(out)
        }
    }
}

/// Appends a key or index to a JSON pointer, escaping as RFC 6901 asks.
pub fn child(pointer: &str, segment: impl fmt::Display) -> String {
    let s = segment.to_string();
    format!("{pointer}/{}", s.replace('~', "~0").replace('/', "~1"))
}

enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

/// A mapping key: any scalar, kept as text (`80: x` has the key "80").
struct Key(String);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Uint(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(Spanned<Key>, Spanned<Node>)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let value = map.next_value()?;
            if entries.iter().any(|(k, _)| k.value.0 == key.value.0) {
                return Err(de::Error::custom(format!(
                    "duplicate key `{}`",
                    key.value.0
                )));
            }
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Key, E> {
                Ok(Key("null".to_owned()))
            }
        }
        // As text: `n:` or `on:` is a key named "n" or "on", not a boolean.
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_keys_and_items() {
        let text =
            "a: 1\nspec:\n  egress:\n  - name: x\n    to:\n    - networks: [\"10.0.0.0/8\"]\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d.value["spec"]["egress"][0]["name"], "x");
        assert_eq!(d.position("/a"), Position { line: 1, column: 1 });
        assert_eq!(d.position("/spec/egress/0/name").line, 4);
        assert_eq!(d.position("/spec/egress/0/to/0/networks/0").line, 6);
        // A missing node reports its nearest ancestor.
        assert_eq!(
            d.position("/spec/egress/0/action"),
            d.position("/spec/egress/0")
        );
    }

    #[test]
    fn several_documents_and_json() {
        let docs = parse_documents("---\nkind: A\n---\n---\nkind: B\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["kind"], "B");
        assert_eq!(docs[1].position("/kind").line, 5);
        let json = parse_documents("{\"kind\": \"List\", \"items\": [{\"a\": 80}]}").unwrap();
        assert_eq!(json[0].value["items"][0]["a"], 80);
    }

    #[test]
    fn scalars_keep_yaml_types() {
        let d = &parse_documents("n: 80\ns: \"80\"\nb: true\nz: null\nk: v\n").unwrap()[0];
        assert_eq!(d.value["n"], 80);
        assert_eq!(d.value["s"], "80");
        assert_eq!(d.value["b"], true);
        assert!(d.value["z"].is_null());
        assert_eq!(d.value["k"], "v");
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.position.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
        assert!(
            parse_documents("a: 1\na: 2\n").is_err(),
            "duplicate keys are rejected"
        );
    }
}
