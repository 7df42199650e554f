//! A plain HTTP/1.1 client on a `std::net::TcpStream`: the tests share
//! nothing of the server's stack.

use std::io::{Read, Write};
use std::time::Duration;

pub struct Reply {
    pub status: u16,
    /// Header lines with lowercased names: `content-type: text/plain`.
    pub headers: Vec<String>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.headers
            .iter()
            .find_map(|h| h.strip_prefix(prefix.as_str()))
    }
}

/// `METHOD path` with `headers` (full lines) and `body`, on a connection of
/// its own.
pub fn request(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP reply");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| format!("{}: {v}", n.to_ascii_lowercase()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

pub fn get(addr: &str, path: &str, headers: &[&str]) -> Reply {
    request(addr, "GET", path, headers, "")
}
