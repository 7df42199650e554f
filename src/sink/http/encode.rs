//! What an HTTP sink writes: the receipt of a dispatch's outcome, as §2
//! reads receipts, `{"dispatch_id","status","time","reason"?}`. (The
//! request body is the dispatch line itself, as on the dispatches topic.)

use serde::Serialize;

use crate::time::{Time, format_rfc3339};

/// How a dispatch's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Delivered,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// A receipt line.
#[derive(Debug, Serialize)]
pub struct Receipt<'a> {
    pub dispatch_id: &'a str,
    pub status: Status,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl<'a> Receipt<'a> {
    pub fn new(dispatch_id: &'a str, status: Status, time: Time, reason: Option<&'a str>) -> Self {
        Receipt {
            dispatch_id,
            status,
            time: format_rfc3339(time),
            reason,
        }
    }

    /// The JSON line, without a newline.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a receipt serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_are_written_as_section_2_reads_them() {
        let t = crate::time::parse_rfc3339("2026-03-01T10:15:00.5Z").unwrap();
        let ok = Receipt::new("d-1", Status::Delivered, t, None).to_json();
        assert_eq!(
            String::from_utf8(ok.clone()).unwrap(),
            r#"{"dispatch_id":"d-1","status":"delivered","time":"2026-03-01T10:15:00.500Z"}"#
        );
        let failed =
            Receipt::new("d-2", Status::Failed, t, Some("HTTP 400 \"Bad\" Request")).to_json();
        assert_eq!(
            String::from_utf8(failed.clone()).unwrap(),
            r#"{"dispatch_id":"d-2","status":"failed","time":"2026-03-01T10:15:00.500Z","reason":"HTTP 400 \"Bad\" Request"}"#
        );
        // They come back through the receipts topic: the job reads them.
        for line in [ok, failed] {
            let r = crate::record::parse_receipt(std::str::from_utf8(&line).unwrap()).unwrap();
            assert_eq!(r.time, t);
        }
    }
}
