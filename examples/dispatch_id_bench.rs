//! Times 1M dispatch ids two ways: `dispatch_id` (SHA-1 fed the name's
//! parts) and `Uuid::new_v5` over the name formatted into a `String`, the
//! figures quoted in `dispatch_id`'s comment.
//!
//! usage: cargo run --release --example dispatch_id_bench [N]
use std::hint::black_box;
use std::time::Instant;

use nudgeflow::record::output::dispatch_id;
use uuid::Uuid;

/// The allocator of the `nudgeflow` binary, which `format!` goes through.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N is a count"))
        .unwrap_or(1_000_000);
    let users: Vec<String> = (0..1000).map(|i| format!("u-{}", 10_000 + i)).collect();
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("shop-web/e-{}", 1_000_000 + i * 7))
        .collect();
    let rule = "cart-recovery";
    for round in 0..3 {
        let t = Instant::now();
        let mut x = 0u64;
        for i in 0..n {
            let i = i as usize;
            let id = dispatch_id(
                &users[i % 1000],
                &keys[(i / 7) % 1000],
                rule,
                1 + (i % 3) as u32,
            );
            x ^= black_box(id).as_u64_pair().0;
        }
        let ours = t.elapsed();
        let t = Instant::now();
        let mut y = 0u64;
        for i in 0..n {
            let i = i as usize;
            let name = format!(
                "nudgeflow:dispatch:{}:{}:{rule}:{}",
                users[i % 1000],
                keys[(i / 7) % 1000],
                1 + (i % 3) as u32
            );
            let id = Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes());
            y ^= black_box(id).as_u64_pair().0;
        }
        let v5 = t.elapsed();
        assert_eq!(x, y, "both ways give the same ids");
        println!(
            "round {round}: {n} ids: dispatch_id {:.1} ms ({:.0} ns/id), Uuid::new_v5 {:.1} ms ({:.0} ns/id)",
            ours.as_secs_f64() * 1e3,
            ours.as_secs_f64() * 1e9 / n as f64,
            v5.as_secs_f64() * 1e3,
            v5.as_secs_f64() * 1e9 / n as f64,
        );
    }
}
