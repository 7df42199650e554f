//! `where` conditions on an event's `data` (DESIGN.md §4 "Rules").
//!
//! A condition compares one field of `data` (a dot path into nested objects)
//! with a value. A null field counts as missing, and a missing field fails
//! every operator but `not_exists`. Numbers compare by value (`1` = `1.0`);
//! the order operators hold only between two numbers or two strings (strings
//! by code point); `=`, `!=` and `in` compare JSON values.

use std::cmp::Ordering;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Exists,
    NotExists,
}

impl Op {
    pub const NAMES: &'static str = "=, !=, <, <=, >, >=, in, exists, not_exists";
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "==" => Op::Eq,
            "!=" | "≠" => Op::Ne,
            "<" => Op::Lt,
            "<=" | "≤" => Op::Le,
            ">" => Op::Gt,
            ">=" | "≥" => Op::Ge,
            "in" => Op::In,
            "exists" => Op::Exists,
            "not_exists" => Op::NotExists,
            _ => return None,
        })
    }
    pub fn takes_value(self) -> bool {
        !matches!(self, Op::Exists | Op::NotExists)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub path: Vec<String>,
    pub op: Op,
    /// For `in`, an array; unused by `exists` / `not_exists`.
    pub value: Value,
}

/// Looks up a dot path; `None` for missing or null.
pub fn lookup<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = data;
    for part in path {
        v = v.as_object()?.get(part)?;
    }
    (!v.is_null()).then_some(v)
}

/// JSON equality with numbers compared by value.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn num_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    // Exact for integers of either sign; f64 otherwise.
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Condition {
    pub fn holds(&self, data: &Value) -> bool {
        let field = lookup(data, &self.path);
        let Some(field) = field else {
            return self.op == Op::NotExists;
        };
        match self.op {
            Op::Exists => true,
            Op::NotExists => false,
            Op::Eq => json_eq(field, &self.value),
            Op::Ne => !json_eq(field, &self.value),
            Op::In => self
                .value
                .as_array()
                .is_some_and(|l| l.iter().any(|v| json_eq(field, v))),
            Op::Lt => order(field, &self.value) == Some(Ordering::Less),
            Op::Le => matches!(
                order(field, &self.value),
                Some(Ordering::Less | Ordering::Equal)
            ),
            Op::Gt => order(field, &self.value) == Some(Ordering::Greater),
            Op::Ge => matches!(
                order(field, &self.value),
                Some(Ordering::Greater | Ordering::Equal)
            ),
        }
    }
}

/// A canonical text for a dedup key value, so that keys compare as JSON
/// values with numbers by value: `1` and `1.0` give the same text. A missing
/// or null field is the key `none`, distinct from every present value.
pub fn canonical_key(v: Option<&Value>) -> String {
    match v {
        None => "none".to_string(),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                format!("n:{i}")
            } else if let Some(u) = n.as_u64() {
                format!("n:{u}")
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    format!("n:{}", f as i64)
                } else {
                    format!("n:{f:?}")
                }
            }
        }
        Some(other) => format!("j:{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(path: &str, op: &str, value: Value) -> Condition {
        Condition {
            path: path.split('.').map(String::from).collect(),
            op: Op::parse(op).unwrap(),
            value,
        }
    }

    #[test]
    fn numbers_by_value_and_missing_fails() {
        let d = json!({"v": 1, "f": 1.0, "s": "abc", "n": null, "o": {"tier": "gold"}});
        assert!(cond("v", "=", json!(1.0)).holds(&d));
        assert!(cond("f", "=", json!(1)).holds(&d));
        assert!(cond("f", "in", json!([3, 1])).holds(&d));
        assert!(cond("o.tier", "=", json!("gold")).holds(&d));
        assert!(!cond("missing", "!=", json!(1)).holds(&d));
        assert!(
            !cond("n", "!=", json!(1)).holds(&d),
            "null counts as missing"
        );
        assert!(cond("n", "not_exists", Value::Null).holds(&d));
        assert!(!cond("n", "exists", Value::Null).holds(&d));
        assert!(cond("s", "exists", Value::Null).holds(&d));
        assert!(
            cond("v", "!=", json!("1")).holds(&d),
            "a number is not a string"
        );
    }

    #[test]
    fn order_only_between_like_types() {
        let d = json!({"v": 20, "s": "b"});
        assert!(cond("v", ">=", json!(20)).holds(&d));
        assert!(cond("v", "<", json!(20.5)).holds(&d));
        assert!(!cond("v", "<", json!("30")).holds(&d));
        assert!(!cond("v", ">=", json!("10")).holds(&d));
        assert!(cond("s", ">", json!("a")).holds(&d));
        assert!(!cond("s", ">", json!(1)).holds(&d));
    }

    #[test]
    fn canonical_keys() {
        assert_eq!(
            canonical_key(Some(&json!(1))),
            canonical_key(Some(&json!(1.0)))
        );
        assert_ne!(
            canonical_key(Some(&json!(1))),
            canonical_key(Some(&json!("1")))
        );
        assert_eq!(canonical_key(None), "none");
        assert_ne!(canonical_key(Some(&json!("none"))), "none");
    }
}
