//! Reading Redis replies into the directory's types. Whatever is in Redis, the result is a
//! value or a `Malformed` error naming the key, never a panic.

use std::collections::HashMap;
use std::str::FromStr;

use redis::Value;

use crate::error::DirectoryError;

/// The bytes of a string reply.
pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A string reply as UTF-8 text.
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, DirectoryError> {
    let b =
        bytes(v).ok_or_else(|| DirectoryError::malformed(key, format!("expected a string, got {v:?}")))?;
    std::str::from_utf8(b).map_err(|_| DirectoryError::malformed(key, "not UTF-8"))
}

/// The elements of an array reply (nil is an empty array).
pub(crate) fn items(v: Value, key: &str) -> Result<Vec<Value>, DirectoryError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(DirectoryError::malformed(
            key,
            format!("expected an array, got {other:?}"),
        )),
    }
}

/// An integer reply.
pub(crate) fn int(v: &Value, key: &str) -> Result<i64, DirectoryError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(DirectoryError::malformed(
            key,
            format!("expected an integer, got {other:?}"),
        )),
    }
}

/// Consecutive pairs of an array (`HGETALL`, or a script's `{name, value, ...}`).
pub(crate) fn pairs(v: Value, key: &str) -> Result<Vec<(Value, Value)>, DirectoryError> {
    let items = items(v, key)?;
    if items.len() % 2 != 0 {
        return Err(DirectoryError::malformed(
            key,
            "odd number of elements in a list of pairs",
        ));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

/// The fields of a hash, by name, as text.
pub(crate) struct Fields<'k> {
    key: &'k str,
    map: HashMap<String, String>,
}

impl<'k> Fields<'k> {
    pub(crate) fn parse(v: Value, key: &'k str) -> Result<Self, DirectoryError> {
        let mut map = HashMap::new();
        for (name, value) in pairs(v, key)? {
            map.insert(text(&name, key)?.to_string(), text(&value, key)?.to_string());
        }
        Ok(Self { key, map })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn text(&self, name: &str) -> Result<&str, DirectoryError> {
        (self.map.get(name).map(String::as_str))
            .ok_or_else(|| DirectoryError::malformed(self.key, format!("field {name:?} is missing")))
    }

    /// A field parsed with `FromStr` (numbers).
    pub(crate) fn number<T: FromStr>(&self, name: &str) -> Result<T, DirectoryError> {
        let s = self.text(name)?;
        s.parse().map_err(|_| {
            DirectoryError::malformed(self.key, format!("field {name:?} = {s:?} is not a number"))
        })
    }

    /// A field parsed by `parse`, which tells what it expected.
    pub(crate) fn typed<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, DirectoryError> {
        let s = self.text(name)?;
        parse(s)
            .ok_or_else(|| DirectoryError::malformed(self.key, format!("field {name:?} = {s:?} is invalid")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn garbage_replies_are_malformed_not_panics() {
        assert!(pairs(Value::Array(vec![bulk(b"a")]), "k").is_err());
        assert!(Fields::parse(Value::Array(vec![bulk(b"a"), bulk(&[0xff, 0xfe])]), "k").is_err());
        assert!(Fields::parse(Value::Int(3), "k").is_err());
        let f = Fields::parse(Value::Array(vec![bulk(b"n"), bulk(b"x1")]), "k").unwrap();
        let e = f.number::<u64>("n").unwrap_err();
        assert!(
            matches!(e, DirectoryError::Malformed { ref key, .. } if key == "k"),
            "{e}"
        );
        assert!(f.text("missing").is_err());
    }
}
