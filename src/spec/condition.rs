//! `where` conditions on an event's `data` (docs/semantics.md "Rules").
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

/// JSON equality with numbers compared by value, at any depth.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// An exact integer, or a float: JSON numbers as parsed.
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &serde_json::Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i as i128)
    } else if let Some(u) = n.as_u64() {
        Num::Int(u as i128)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Compares an integer with a float exactly (no rounding of either).
fn int_float_cmp(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= 1.8e19 {
        return Some(Ordering::Less);
    }
    if f <= -1.8e19 {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    match i.cmp(&(floor as i128)) {
        Ordering::Equal if f > floor => Some(Ordering::Less),
        other => Some(other),
    }
}

/// Numbers by value, exactly: integers as integers, floats as floats, and
/// an integer against a float without rounding.
fn num_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    match (num(x), num(y)) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
        (Num::Int(a), Num::Float(b)) => int_float_cmp(a, b),
        (Num::Float(a), Num::Int(b)) => int_float_cmp(b, a).map(Ordering::reverse),
    }
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
/// values with numbers by value at any depth: `1`, `1.0` and `[1.0]`/`[1]`
/// pair up. A missing or null field is the key `none`, distinct from every
/// present value.
pub fn canonical_key(v: Option<&Value>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => {
            let mut out = String::from("j:");
            canonical(v, &mut out);
            out
        }
    }
}

fn canonical(v: &Value, out: &mut String) {
    use std::fmt::Write;
    match v {
        Value::Number(n) => match num(n) {
            Num::Int(i) => {
                let _ = write!(out, "{i}");
            }
            // An integral float is written as the integer it equals when
            // JSON integers of that size exist (serde_json reads integers
            // in [i64::MIN, u64::MAX] as integers, larger ones as floats).
            Num::Float(f)
                if f.fract() == 0.0
                    && f >= -9.223_372_036_854_775_808e18
                    && f < 1.844_674_407_370_955_161_6e19 =>
            {
                let _ = write!(out, "{}", f as i128);
            }
            Num::Float(f) => {
                let _ = write!(out, "{f:e}");
            }
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's map is ordered by key: the text is canonical.
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::String(k.clone()));
                canonical(item, out);
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other}");
        }
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
        // Equal by value at every magnitude: 1e18 and 2^63 as floats.
        for (int, float) in [
            (json!(1_000_000_000_000_000_000u64), json!(1e18)),
            (json!(-1_000_000_000_000_000_000i64), json!(-1e18)),
            (
                json!(9_223_372_036_854_775_808u64),
                json!(9.223372036854775808e18),
            ),
            (json!(i64::MIN), json!(-9.223372036854775808e18)),
        ] {
            assert_eq!(
                canonical_key(Some(&int)),
                canonical_key(Some(&float)),
                "{int} = {float}"
            );
        }
        assert_ne!(
            canonical_key(Some(&json!(1_000_000_000_000_000_001u64))),
            canonical_key(Some(&json!(1e18)))
        );
        assert_eq!(
            canonical_key(Some(&json!([7]))),
            canonical_key(Some(&json!([7.0])))
        );
        assert_eq!(
            canonical_key(Some(&json!({"a": 1}))),
            canonical_key(Some(&json!({"a": 1.0})))
        );
        assert_ne!(
            canonical_key(Some(&json!({"a": 1}))),
            canonical_key(Some(&json!({"a": 1.5})))
        );
        assert_ne!(canonical_key(Some(&json!("none"))), "none");
    }
}
