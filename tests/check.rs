//! `nudgeflow check`: a valid spec is "ok" with its rule count (one rule is
//! "1 rule"), and an invalid spec prints every problem, in file order, one
//! a line, and the command fails.

use std::process::Command;

#[test]
fn check_prints_every_problem_and_counts_rules() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketng\"\nchanels = [\"push\"]\n\
         [[rule]]\nname = \"b\"\non = \"y\"\npurpose = \"marketing\"\nchannels = [\"emial\"]\n\
         delay = \"30m 1h 1h\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
        .arg("check")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stdout, format!("{}: ok (1 rule)\n", good.display()));
    let b = bad.display();
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&*b.to_string()))
        .collect();
    assert_eq!(
        problems,
        [
            format!(
                "{b}:4: rule `a`: purpose: unknown purpose \"marketng\"; did you mean \"marketing\"?"
            ),
            format!("{b}:5: rule `a`: unknown key `chanels`; did you mean `channels`?"),
            format!(
                "{b}:10: rule `b`: channels: unknown channel \"emial\"; did you mean \"email\"?"
            ),
            format!(
                "{b}:11: rule `b`: delay: \"30m 1h 1h\" names hours (h) after minutes (m); \
                 write each unit once, largest first (d, h, m, s, ms): \"2h30m\""
            ),
        ],
        "{stderr}"
    );
    assert!(stderr.contains("1 of 2 file(s) are invalid"), "{stderr}");
}

#[test]
fn check_reports_analytics_problems() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("analytics.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\n\n\
         [analytics]\nactivity = \"order.placed\"\nbuckt = \"week\"\n\n\
         [analytics.churn]\nr = 0.243\nalpha = 0\na = 0.793\nb = 2.426\nthreshold = 1.5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let b = bad.display();
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&*b.to_string()))
        .collect();
    assert_eq!(
        problems,
        [
            format!("{b}:9: analytics: unknown key `buckt`; did you mean `bucket`?"),
            format!(
                "{b}:13: analytics.churn: alpha: 0 is not above 0; write a positive number (in `unit`s), e.g. alpha = 4.414"
            ),
            format!(
                "{b}:16: analytics.churn: threshold: 1.5 is not a probability between 0 and 1 (both excluded); write e.g. threshold = 0.3"
            ),
        ],
        "{stderr}"
    );
}
