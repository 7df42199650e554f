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
