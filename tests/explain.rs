//! Golden explanations: every `fixtures/<case>/expected/explain/<user>.txt`
//! is what `nudgeflow explain` prints for that user of that case, on one
//! worker and on three (the timeline does not depend on the worker count).

mod common;

use std::sync::Arc;

use common::{case_spec, diff, read, repo};
use nudgeflow::replay::{Cluster, ReplayOptions};
use nudgeflow::source::fixture::{DEFAULT_STRIPE_BYTES, DEFAULT_STRIPES_PER_STEP};

#[test]
fn golden_explanations() {
    let mut files = Vec::new();
    for case in std::fs::read_dir(repo().join("fixtures")).unwrap() {
        let case = case.unwrap().path();
        let Ok(dir) = std::fs::read_dir(case.join("expected/explain")) else {
            continue;
        };
        for file in dir {
            files.push((case.clone(), file.unwrap().path()));
        }
    }
    files.sort();
    assert!(files.len() >= 10, "the golden explanations are missing");
    let mut failures = String::new();
    for (case, file) in &files {
        let user = file.file_stem().unwrap().to_string_lossy().to_string();
        let expected = read(file);
        for workers in [1, 3] {
            let opts = ReplayOptions {
                spec: Arc::clone(&case_spec(case)),
                fixture: case.clone(),
                cluster: Cluster::single(workers),
                stripe_bytes: DEFAULT_STRIPE_BYTES,
                stripes_per_step: DEFAULT_STRIPES_PER_STEP,
                progress: false,
                as_of: None,
            };
            let actual = nudgeflow::explain::explain(&opts, &user).unwrap();
            let name = format!("{} user {user} (-w {workers})", case.display());
            if let Some(d) = diff(&name, &expected, &actual) {
                failures += &d;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "explanations differ (- expected, + actual):\n{failures}"
    );
}
