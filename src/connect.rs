//! Connects the processes of a cluster, giving up at a deadline.
//!
//! timely's own connection phase retries for ever and prints its progress
//! on stdout. This one makes the same sockets (process `i` connects to every
//! process below it and accepts every process above it, on its host-file
//! address), then timely runs over them. Each connection starts with a
//! handshake: the connecting process sends its index and `-n`, the
//! accepting one answers with its own and, from process 0, the run id that
//! names the run's parts. A process whose peers are not all connected by
//! the deadline fails with the missing ones' indices and addresses.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: [u8; 8] = *b"nudgeflw";
/// Magic, index, processes.
const HELLO: usize = 24;
/// Magic, index, processes, run id.
const REPLY: usize = 40;
/// How often waiting is reported (without `-q`).
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Every peer's socket (`None` at this process's own index) and the
/// run id, as chosen by process 0.
pub struct Connected {
    pub sockets: Vec<Option<TcpStream>>,
    pub run: String,
}

fn put(buf: &mut [u8], at: usize, n: usize) {
    buf[at..at + 8].copy_from_slice(&(n as u64).to_be_bytes());
}

fn get(buf: &[u8], at: usize) -> usize {
    u64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes")) as usize
}

/// A new run id: a hash of the time, the process id and the addresses.
fn new_run_id(addresses: &[String]) -> [u8; 16] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}:{}:{}", std::process::id(), addresses.join(","));
    xxhash_rust::xxh3::xxh3_128(seed.as_bytes()).to_be_bytes()
}

fn hex(run: &[u8; 16]) -> String {
    run.iter().map(|b| format!("{b:02x}")).collect()
}

/// Time left until `deadline`, at least `floor`.
fn left(deadline: Instant, floor: Duration) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(floor)
}

/// Why a connection attempt did not give a peer.
enum Failed {
    /// Worth trying again (not listening yet, gone away in between).
    Retry(String),
    /// The peer answered, but the cluster is misconfigured.
    Fatal(anyhow::Error),
}

/// Connects to process `peer` at `address` and exchanges the handshake;
/// the run id it sent.
fn connect_to(
    address: &str,
    me: usize,
    peer: usize,
    processes: usize,
    deadline: Instant,
) -> Result<(TcpStream, [u8; 16]), Failed> {
    let retry = |e: std::io::Error| Failed::Retry(e.to_string());
    let mut last = None;
    let mut stream = None;
    for address in address.to_socket_addrs().map_err(retry)? {
        let wait = left(deadline, Duration::from_millis(50)).min(Duration::from_secs(1));
        match TcpStream::connect_timeout(&address, wait) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(retry(e)),
        (None, None) => return Err(Failed::Retry("the address resolves to nothing".into())),
    };
    let mut hello = [0u8; HELLO];
    hello[..8].copy_from_slice(&MAGIC);
    put(&mut hello, 8, me);
    put(&mut hello, 16, processes);
    let mut reply = [0u8; REPLY];
    let wait = left(deadline, Duration::from_millis(100)).min(Duration::from_secs(5));
    stream
        .set_read_timeout(Some(wait))
        .and_then(|()| stream.write_all(&hello))
        .and_then(|()| stream.read_exact(&mut reply))
        .map_err(retry)?;
    if reply[..8] != MAGIC || get(&reply, 8) != peer {
        return Err(Failed::Fatal(anyhow::anyhow!(
            "{address} (process {peer} in the host file) is not process {peer} of a nudgeflow replay"
        )));
    }
    if get(&reply, 16) != processes {
        return Err(Failed::Fatal(anyhow::anyhow!(
            "process {peer} at {address} runs with -n {}, this process (-p {me}) with -n {processes}",
            get(&reply, 16)
        )));
    }
    let run = reply[24..].try_into().expect("16 bytes");
    Ok((stream, run))
}

/// Reads the handshake of a process that connected to this one and
/// answers it; its index. A connection that is not a peer's handshake
/// is an error to report and drop; a peer with another `-n` is fatal.
fn accept_from(
    mut stream: TcpStream,
    me: usize,
    processes: usize,
    run: [u8; 16],
    deadline: Instant,
) -> Result<(usize, TcpStream), Failed> {
    let retry = |e: std::io::Error| Failed::Retry(e.to_string());
    stream.set_nonblocking(false).map_err(retry)?;
    let wait = left(deadline, Duration::from_millis(100)).min(Duration::from_secs(5));
    stream.set_read_timeout(Some(wait)).map_err(retry)?;
    let mut hello = [0u8; HELLO];
    stream.read_exact(&mut hello).map_err(retry)?;
    let (peer, theirs) = (get(&hello, 8), get(&hello, 16));
    if hello[..8] != MAGIC || peer <= me || (theirs == processes && peer >= processes) {
        return Err(Failed::Retry(
            "a connection that is not from a later process of this cluster".into(),
        ));
    }
    let mut reply = [0u8; REPLY];
    reply[..8].copy_from_slice(&MAGIC);
    put(&mut reply, 8, me);
    put(&mut reply, 16, processes);
    reply[24..].copy_from_slice(&run);
    stream.write_all(&reply).map_err(retry)?;
    if theirs != processes {
        return Err(Failed::Fatal(anyhow::anyhow!(
            "process {peer} runs with -n {theirs}, this process (-p {me}) with -n {processes}"
        )));
    }
    Ok((peer, stream))
}

/// Connects this process (`me`) to every other one of `addresses`
/// within `timeout`; reports whom it waits for on stderr if `report`.
pub fn connect(
    addresses: &[String],
    me: usize,
    timeout: Duration,
    report: bool,
) -> anyhow::Result<Connected> {
    let processes = addresses.len();
    let started = Instant::now();
    let deadline = started + timeout;
    let mut sockets: Vec<Option<TcpStream>> = (0..processes).map(|_| None).collect();
    // Why the last attempt to reach each earlier process failed.
    let mut why: Vec<Option<String>> = vec![None; processes];
    let mut run = (me == 0).then(|| new_run_id(addresses));
    let listeners = if me + 1 < processes {
        addresses[me]
            .split_whitespace()
            .map(|a| {
                let l = TcpListener::bind(a).map_err(|e| {
                    anyhow::anyhow!(
                        "process {me} cannot listen on {a} (its host-file address): {e}"
                    )
                })?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let mut reported = started;
    loop {
        let mut progressed = false;
        for peer in 0..me {
            if sockets[peer].is_some() {
                continue;
            }
            match connect_to(&addresses[peer], me, peer, processes, deadline) {
                Ok((stream, id)) => {
                    if peer == 0 {
                        run = Some(id);
                    }
                    sockets[peer] = Some(stream);
                    progressed = true;
                }
                Err(Failed::Retry(e)) => why[peer] = Some(e),
                Err(Failed::Fatal(e)) => return Err(e),
            }
        }
        // Only process 0's answer carries the run id; the others send
        // what they have (connecting processes keep process 0's).
        let ours = run.unwrap_or_default();
        for listener in &listeners {
            while let Ok((stream, from)) = listener.accept() {
                match accept_from(stream, me, processes, ours, deadline) {
                    Ok((peer, stream)) => {
                        // A peer that connects again gave up on its
                        // earlier connection.
                        sockets[peer] = Some(stream);
                        progressed = true;
                    }
                    Err(Failed::Retry(e)) => {
                        tracing::warn!(%from, error = %e, "dropped a connection")
                    }
                    Err(Failed::Fatal(e)) => return Err(e),
                }
            }
        }
        let missing: Vec<usize> = (0..processes)
            .filter(|&p| p != me && sockets[p].is_none())
            .collect();
        if missing.is_empty() {
            break;
        }
        let describe = |p: usize| match (p < me, &why[p]) {
            (true, Some(e)) => format!("process {p} at {} ({e})", addresses[p]),
            (true, None) => format!("process {p} at {}", addresses[p]),
            (false, _) => format!(
                "process {p} at {} (it has not connected to this process at {})",
                addresses[p], addresses[me]
            ),
        };
        let missing_text = || {
            missing
                .iter()
                .map(|&p| describe(p))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "process {me} of {processes} gave up after {} s (--connect-timeout): no connection with {}; \
                 is every process running, with the same -n and host file?",
                timeout.as_secs_f64(),
                missing_text()
            );
        }
        if report && reported.elapsed() >= REPORT_EVERY {
            eprintln!("process {me}: waiting for {}", missing_text());
            reported = Instant::now();
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for socket in sockets.iter().flatten() {
        socket.set_read_timeout(None)?;
        socket.set_nodelay(true)?;
    }
    if report {
        eprintln!(
            "process {me}: connected to {} other process(es) in {:.1} s",
            processes - 1,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Connected {
        sockets,
        run: hex(&run.expect("connected to process 0, or process 0 itself")),
    })
}
