//! JSON objects edited in place: a response the gateway must change keeps every other
//! member's text and the members' order (serde_json's `Map` would sort the keys).
//!
//! [`Obj`] holds an object's members as raw JSON text; only the members that are replaced
//! are re-serialized.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Members from which repeated keys are found through a map rather than a scan.
const INDEX_FROM: usize = 32;

/// A JSON object as ordered `(key, raw value)` pairs.
#[derive(Debug, Default)]
pub struct Obj(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Obj {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Obj, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Obj;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Obj, A::Error> {
                let mut members: Vec<(String, Box<RawValue>)> = Vec::new();
                // Positions by key, once there are enough members for a scan to cost.
                let mut index: HashMap<String, usize> = HashMap::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    // A repeated key: the last value wins, in the first one's place, as
                    // in every SDK's parser (Python's `json`, `JSON.parse`) and
                    // serde_json's `Value`: what the gateway checks is what the agent
                    // reads, and a rewrite leaves one member, not the unchecked one.
                    let at = if members.len() < INDEX_FROM {
                        members.iter().position(|(have, _)| *have == k)
                    } else {
                        if index.is_empty() {
                            index =
                                members.iter().enumerate().map(|(i, (key, _))| (key.clone(), i)).collect();
                        }
                        index.get(&k).copied()
                    };
                    match at {
                        Some(i) => members[i].1 = v,
                        None => {
                            if !index.is_empty() {
                                index.insert(k.clone(), members.len());
                            }
                            members.push((k, v));
                        }
                    }
                }
                Ok(Obj(members))
            }
        }
        d.deserialize_map(V)
    }
}

impl Obj {
    /// Parses `text` as one JSON object.
    pub fn parse(text: &str) -> Result<Obj, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Parses a body as one JSON object; the error says why it is not one (not UTF-8, or
    /// not such JSON).
    pub fn parse_bytes(body: &[u8]) -> Result<Obj, String> {
        let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
        Obj::parse(text).map_err(|e| e.to_string())
    }

    /// Parses a raw member value as an object.
    pub fn of(raw: &RawValue) -> Result<Obj, serde_json::Error> {
        Obj::parse(raw.get())
    }

    /// The raw value of member `key`.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// Member `key` parsed as a string, if it is one.
    pub fn str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    /// Replaces member `key` (or appends it) with `value`.
    pub fn set_raw(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Replaces member `key` (or appends it) with `value` serialized.
    pub fn set<T: serde::Serialize>(&mut self, key: &str, value: &T) -> Result<(), serde_json::Error> {
        self.set_raw(key, raw(value)?);
        Ok(())
    }

    /// Removes member `key`.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// The object as JSON text.
    pub fn to_raw(&self) -> Result<Box<RawValue>, serde_json::Error> {
        RawValue::from_string(self.to_string())
    }
}

impl fmt::Display for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let key = serde_json::to_string(k).map_err(|_| fmt::Error)?;
            write!(f, "{key}:{}", v.get())?;
        }
        f.write_str("}")
    }
}

/// For `#[serde(default, borrow, deserialize_with = "present")]` on an
/// `Option<&RawValue>` field: a member that is there, `null` included, is `Some` (plain
/// `Option` reads `null` as `None`); a missing one is `None`.
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Whether a raw value is a JSON array (a member that may also be a string or null).
pub fn is_array(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('[')
}

/// `value` serialized as a raw JSON value.
pub fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(value)
}

/// A raw JSON array's elements.
pub fn array(raw: &RawValue) -> Result<Vec<Box<RawValue>>, serde_json::Error> {
    serde_json::from_str(raw.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_text_are_kept() {
        let text = r#"{"z": 1, "a": {"x":  [1, 2]}, "m": "s"}"#;
        let mut o = Obj::parse(text).expect("object");
        assert_eq!(o.to_string(), r#"{"z":1,"a":{"x":  [1, 2]},"m":"s"}"#);
        o.set("a", &serde_json::json!(null)).expect("set");
        o.remove("z");
        o.set("new", &"v").expect("set");
        assert_eq!(o.to_string(), r#"{"a":null,"m":"s","new":"v"}"#);
        assert_eq!(o.str("m").as_deref(), Some("s"));
        assert!(Obj::parse("[1]").is_err());
        let dup = Obj::parse(r#"{"content":[],"id":"m","content":[{"type":"tool_use"}]}"#).expect("object");
        assert_eq!(
            dup.get("content").map(RawValue::get),
            Some(r#"[{"type":"tool_use"}]"#),
            "the last value wins"
        );
        assert_eq!(dup.to_string(), r#"{"content":[{"type":"tool_use"}],"id":"m"}"#, "one member left");
        // Past INDEX_FROM members, through the map: the same rule.
        let many: Vec<String> = (0..100).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let text = format!(r#"{{{},"k3":"last","k99":"end"}}"#, many.join(","));
        let o = Obj::parse(&text).expect("object");
        assert_eq!(o.0.len(), 100);
        assert_eq!(o.str("k3").as_deref(), Some("last"));
        assert_eq!(o.str("k99").as_deref(), Some("end"));
        assert_eq!(o.0[3].0, "k3", "in the first one's place");
        assert!(Obj::parse("{").is_err());
    }
}
