//! Golden fixtures: every `fixtures/<case>/` with an `expected/` directory is
//! replayed and its outputs must equal the expected files byte for byte —
//! once on one worker with the default stripe size, and once on three
//! workers with tiny stripes (so every file is cut into many stripes and the
//! cross-stripe lateness and line numbering are exercised).

mod common;

use common::{case_spec, diff, read, replay, repo};

const OUTPUTS: [&str; 3] = [
    "dispatches.jsonl",
    "suppressions.jsonl",
    "dead_letters.jsonl",
];

#[test]
fn golden_fixtures() {
    let mut cases: Vec<_> = std::fs::read_dir(repo().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected").is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases found");
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = String::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let spec = case_spec(case);
        for (workers, stripe) in [(1, 1 << 20), (3, 97)] {
            let out = tmp.path().join(format!("{name}-w{workers}"));
            replay(&spec, case, &out, workers, stripe);
            for file in OUTPUTS {
                let expected = read(&case.join("expected").join(file));
                let actual = read(&out.join(file));
                if let Some(d) = diff(
                    &format!("{name} (-w {workers}, stripes of {stripe} bytes) {file}"),
                    &expected,
                    &actual,
                ) {
                    failures += &d;
                }
            }
        }
        println!("ok {name}");
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (- expected, + actual):\n{failures}"
    );
}
