//! The command line, run as a user runs it: the built binary, its exit
//! status, what it prints and what it leaves on disk.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn nudgeflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nudgeflow"));
    cmd.env_remove("NUDGEFLOW_LOG").stdin(Stdio::null());
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` with its contents, in order.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.push((path.clone(), Vec::new()));
                todo.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A replay of the e-commerce scenario as process `p` of a two-process
/// cluster on `hosts`.
fn cluster_replay(hosts: &Path, out: &Path, p: usize) -> Command {
    let mut cmd = nudgeflow();
    cmd.arg("replay")
        .arg("--spec")
        .arg(common::repo().join("dataflows/ecommerce.toml"))
        .arg("--fixture")
        .arg(common::repo().join("fixtures/ecommerce-scenario"))
        .arg("--out")
        .arg(out)
        .args(["-n", "2", "-p", &p.to_string(), "-h"])
        .arg(hosts);
    cmd
}

/// A process whose peer never starts gives up after --connect-timeout,
/// names the missing process and its address, and leaves --out as it
/// was: nothing created, nothing emptied. Either side: process 0 waits
/// for process 1 to connect, process 1 fails to connect to process 0.
#[test]
fn a_cluster_process_without_its_peer_gives_up_and_leaves_out_alone() {
    for alone in [0, 1] {
        let tmp = tempfile::tempdir().unwrap();
        let ports = [common::free_port(), common::free_port()];
        let hosts = tmp.path().join("hosts");
        std::fs::write(
            &hosts,
            format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
        )
        .unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("dispatches.jsonl"), "{\"kept\":1}\n").unwrap();
        std::fs::write(out.join("summary.json"), "{}\n").unwrap();
        let before = snapshot(&out);

        let started = Instant::now();
        let run = cluster_replay(&hosts, &out, alone)
            .args(["--connect-timeout", "2"])
            .output()
            .unwrap();
        let took = started.elapsed();
        let err = stderr(&run);
        assert!(!run.status.success(), "process {alone} alone: {err}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(20),
            "process {alone} gave up after {took:?}"
        );
        let peer = 1 - alone;
        let named = format!("process {peer} at 127.0.0.1:{}", ports[peer]);
        assert!(
            err.contains(&named) && err.contains("--connect-timeout"),
            "process {alone}: {err}"
        );
        assert_eq!(snapshot(&out), before, "process {alone} changed --out");
    }
}

/// `-q` silences the cluster's connection messages (and everything else
/// but errors), also while a process waits for a peer that starts late;
/// without it, the connection is reported on stderr.
#[test]
fn quiet_silences_the_connection_chatter() {
    for quiet in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let hosts = common::two_process_hostfile(tmp.path());
        let out = tmp.path().join("out");
        let spawn = |p: usize| {
            let mut cmd = cluster_replay(&hosts, &out, p);
            if quiet {
                cmd.arg("-q");
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let first = spawn(0);
        // Process 0 waits for a while, and would say so.
        std::thread::sleep(Duration::from_millis(1500));
        let second = spawn(1);
        for (p, child) in [first, second].into_iter().enumerate() {
            let run = child.wait_with_output().unwrap();
            assert!(run.status.success(), "process {p}: {}", stderr(&run));
            let printed = String::from_utf8_lossy(&run.stdout).into_owned() + &stderr(&run);
            if quiet {
                assert_eq!(printed, "", "process {p} printed with -q");
            } else {
                assert!(
                    printed.contains(&format!("process {p}: connected to 1 other process")),
                    "process {p}: {printed}"
                );
            }
        }
    }
}

/// `replay --out FILE` refuses at once, before even reading the spec,
/// and leaves the file as it was.
#[test]
fn replay_out_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out.txt");
    std::fs::write(&file, "mine\n").unwrap();
    let run = nudgeflow()
        .args(["replay", "--spec", "no-such-spec.toml", "--fixture"])
        .arg(common::repo().join("fixtures/ecommerce-scenario"))
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let expected = format!("--out {} is a file, not a directory", file.display());
    assert!(stderr(&run).contains(&expected), "{}", stderr(&run));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
}

/// `gen` refuses a directory that holds anything, unless --force, and
/// touches nothing when it refuses.
#[test]
fn gen_refuses_a_non_empty_out_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fixture");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("events.jsonl"), "precious\n").unwrap();
    let gen_into = |force: bool| {
        let mut cmd = nudgeflow();
        cmd.args(["gen", "--users", "20", "--events", "200", "--out"])
            .arg(&out);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let refused = gen_into(false);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is not empty") && stderr(&refused).contains("--force"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("events.jsonl")).unwrap(),
        "precious\n"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    let forced = gen_into(true);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(
        std::fs::read_to_string(out.join("events.jsonl"))
            .unwrap()
            .starts_with("{\"specversion\""),
        "--force overwrites"
    );

    // A new or empty directory needs no --force.
    let fresh = tmp.path().join("fresh");
    let run = nudgeflow()
        .args(["gen", "--users", "20", "--events", "200", "--out"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
}

/// `gen receipts` writes receipts.jsonl for the dispatches of a replay,
/// the same for the same seed, which a replay reads whole, without dead
/// letters; it refuses to replace one without --force.
#[test]
fn gen_receipts_answers_the_dispatches_of_a_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let (fixture, out) = (tmp.path().join("fixture"), tmp.path().join("out"));
    let ok = |cmd: &mut Command| {
        let run = cmd.output().unwrap();
        assert!(run.status.success(), "{}", stderr(&run));
        stderr(&run)
    };
    let replay = |to: &Path| {
        ok(nudgeflow()
            .arg("replay")
            .arg("--spec")
            .arg(common::repo().join("dataflows/core.toml"))
            .arg("--fixture")
            .arg(&fixture)
            .arg("--out")
            .arg(to)
            .arg("-q"));
    };
    ok(nudgeflow()
        .args([
            "gen", "--users", "50", "--events", "2000", "--days", "1", "--out",
        ])
        .arg(&fixture));
    replay(&out);
    let gen_receipts = || {
        let mut cmd = nudgeflow();
        cmd.args(["gen", "receipts", "--seed", "4", "--dispatches"])
            .arg(out.join("dispatches.jsonl"))
            .arg("--out")
            .arg(&fixture);
        cmd
    };
    assert!(ok(&mut gen_receipts()).contains("receipts for"));
    let receipts = fixture.join("receipts.jsonl");
    let first = std::fs::read(&receipts).unwrap();
    assert!(first.len() > 1000, "a few receipts at least");
    let refused = gen_receipts().output().unwrap();
    assert!(!refused.status.success() && stderr(&refused).contains("--force"));
    ok(gen_receipts().arg("--force"));
    assert_eq!(
        std::fs::read(&receipts).unwrap(),
        first,
        "same seed, same bytes"
    );
    let again = tmp.path().join("again");
    replay(&again);
    assert_eq!(common::read(&again.join("dead_letters.jsonl")), "");
    let records = |dir: &Path| {
        let summary: serde_json::Value =
            serde_json::from_str(&common::read(&dir.join("summary.json"))).unwrap();
        summary["records"].as_u64().unwrap()
    };
    let lines = first.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(
        records(&again),
        records(&out) + lines,
        "every receipt is read"
    );
}

/// The demo removes its temporary directory when it is done, and when it
/// fails.
#[test]
fn the_demo_leaves_no_temporary_files() {
    for (args, succeeds) in [(&["demo"][..], true), (&["demo", "-w", "0"][..], false)] {
        let tmp = tempfile::tempdir().unwrap();
        let run = nudgeflow()
            .args(args)
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert_eq!(run.status.success(), succeeds, "{args:?}: {}", stderr(&run));
        if succeeds {
            assert!(String::from_utf8_lossy(&run.stdout).contains("# dispatches"));
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

/// Log lines and progress bars are for terminals: written to a pipe,
/// the log has no colour codes and no progress bar is drawn.
#[test]
fn no_colour_or_progress_bar_when_not_on_a_terminal() {
    let run = nudgeflow()
        .arg("demo")
        .env("NUDGEFLOW_LOG", "info")
        .env_remove("NO_COLOR")
        .env("TMPDIR", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("replay starting"), "the log is on: {err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");

    let tmp = tempfile::tempdir().unwrap();
    let run = nudgeflow()
        .args(["gen", "--users", "2000", "--events", "300000", "--out"])
        .arg(tmp.path().join("fixture"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        !err.contains("generating") && !err.contains('\r') && !err.contains('\u{1b}'),
        "a progress bar drawn into a pipe: {err:?}"
    );
}
