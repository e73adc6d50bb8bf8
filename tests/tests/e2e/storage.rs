//! Storage faults at the level users see.
//!
//! * The data directory fills up (`HERALD_E2E_DISK_FULL_CYCLES` times, default once): it
//!   is a small tmpfs this test mounts itself. Publishing until the journal cannot make
//!   its next segment gets a 503 with `Retry-After` and a message saying why; queries keep
//!   working; once a filler file is deleted the server takes publishes again by itself;
//!   every acknowledged event is delivered and survives SIGKILL and a restart; no refused
//!   event is ever delivered.
//! * A journal segment damaged in the middle: `herald serve` refuses to start, naming the
//!   file and offset; `herald journal check` reports it; `--repair` says what it lost;
//!   the server then starts on what is left.
//!
//! Mounting needs CAP_SYS_ADMIN (root here and in CI); where it is not permitted the
//! disk-full test says so on stderr and checks nothing.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_e2e::*;
use herald_sink::Sink;
use serde_json::json;

use crate::FAST_RETRIES;

/// Journal segments of the smallest size, so a 2 MiB disk fills after a few hundred
/// events (the default 64 MiB would need a large disk and tens of thousands).
const SMALL_SEGMENTS: &str = "[journal]\nsegment_bytes = 65536\n";
/// Size of the mounted data directory.
const DISK_BYTES: u64 = 2 * 1024 * 1024;
/// Most fill-and-free cycles (`HERALD_E2E_DISK_FULL_CYCLES`, default 1).
const CYCLES_MAX: usize = 50;
/// Most publishes before the disk must have filled (each event carries ~1 KiB).
const PUBLISHES_MAX: usize = 5_000;
/// Bound on the server taking publishes again once space is freed (it probes its
/// journal at most 2 s apart).
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Unmounts on drop, even when an assertion fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, bytes: u64) -> Option<Mount> {
    std::fs::create_dir_all(at).ok()?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "herald-e2e"])
        .arg(at)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| Mount(at.to_path_buf()))
}

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let file = std::fs::File::create(&path).expect("the filler file is created");
    let mut writer = std::io::BufWriter::new(file);
    let chunk = vec![1u8; 4096];
    while writer.write_all(&chunk).is_ok() {}
    let _ = writer.flush();
    path
}

fn event(n: usize) -> serde_json::Value {
    json!({"type": "order.created", "id": format!("evt_full_{n}"), "data": {"n": n, "pad": "x".repeat(1000)}})
}

/// Event ids that reached `path`.
fn arrived(sink: &Sink, path: &str) -> BTreeSet<String> {
    sink.requests_to(path)
        .iter()
        .filter_map(event_id_of)
        .collect()
}

#[test]
fn a_full_data_dir_answers_503_then_resumes_by_itself() {
    let cycles = std::env::var("HERALD_E2E_DISK_FULL_CYCLES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, CYCLES_MAX);
    let site = Site::new();
    // Room for the journal to grow by a few segments per cycle.
    let disk_bytes = DISK_BYTES + cycles as u64 * 256 * 1024;
    let Some(_mount) = mount_tmpfs(&site.data_dir(), disk_bytes) else {
        eprintln!("storage: cannot mount a tmpfs here (not root?); skipped");
        return;
    };
    let sink = Sink::start_default().expect("the sink starts");
    let path = "/full";
    let secret = standard_secret(21);
    let options = Options::default().config(&format!("{FAST_RETRIES}{SMALL_SEGMENTS}"));
    let server = Server::start(&site, &options);
    let tenant = create_tenant(&server.admin(), "tenant_full");
    let webhook = create_webhook(
        &tenant,
        &json!({"url": sink.url(path), "events": ["order.*"], "secret": secret}),
    );
    let webhook_id = webhook["id"].as_str().expect("id").to_string();
    let mut acknowledged = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut n = 0;
    let mut waited = 0;
    for cycle in 0..cycles {
        let filler = fill(&site.data_dir());
        let first_refusal = loop {
            assert!(
                n < PUBLISHES_MAX * (cycle + 1),
                "cycle {cycle}: the disk never filled"
            );
            let answer = tenant.post("/v1/events", &event(n));
            match answer.status {
                202 => {
                    acknowledged.insert(format!("evt_full_{n}"));
                }
                503 => {
                    refused.insert(format!("evt_full_{n}"));
                    break answer;
                }
                other => panic!("publish {n}: {other} {}", answer.text()),
            }
            n += 1;
        };
        assert_eq!(first_refusal.error_code(), "unavailable");
        let message = first_refusal.error_message();
        assert!(
            message.contains("No space left on device") && message.contains("journal"),
            "the 503 says why: {message}"
        );
        assert!(
            first_refusal
                .header("retry-after")
                .is_some_and(|s| s.parse::<u32>().is_ok()),
            "503 without a Retry-After in seconds"
        );
        assert!(
            !acknowledged.is_empty(),
            "events fitted before the disk filled"
        );
        let refused_before = refused.len();

        // While the disk stays full: publishes and webhook changes are refused at once,
        // reads are answered, and the server stays up.
        for _ in 0..3 {
            n += 1;
            let answer = tenant.post("/v1/events", &event(n));
            assert_eq!(answer.status, 503, "{}", answer.text());
            refused.insert(format!("evt_full_{n}"));
        }
        let change = tenant.post(
            "/v1/webhooks",
            &json!({"url": sink.url("/other"), "events": ["*"]}),
        );
        assert_eq!(change.status, 503, "{}", change.text());
        // A new tenant is not made: its id's purge, journaled first, is refused too.
        let made = server
            .admin()
            .post("/v1/tenants", &json!({"id": format!("tenant_new_{cycle}")}));
        assert_eq!(made.status, 503, "{}", made.text());
        let message = made.error_message();
        assert!(
            message.contains("was not created") && message.contains("No space left on device"),
            "the 503 says why: {message}"
        );
        assert!(!message.contains(".seg"), "no server path: {message}");
        tenant
            .get(&format!("/v1/webhooks/{webhook_id}"))
            .expect(200);
        tenant
            .get(&format!("/v1/webhooks/{webhook_id}/deliveries"))
            .expect(200);
        server.client().get("/healthz").expect(200);

        // Space frees: publishes are taken again without a restart.
        std::fs::remove_file(&filler).expect("the filler is deleted");
        wait_for(
            "a publish to be accepted after space was freed",
            RESUME_TIMEOUT,
            || {
                n += 1;
                waited += 1;
                let answer = tenant.post("/v1/events", &event(n));
                match answer.status {
                    202 => {
                        acknowledged.insert(format!("evt_full_{n}"));
                        Some(())
                    }
                    503 => {
                        refused.insert(format!("evt_full_{n}"));
                        None
                    }
                    other => panic!("after space was freed: {other} {}", answer.text()),
                }
            },
        );
        for _ in 0..20 {
            n += 1;
            publish(&tenant, &event(n));
            acknowledged.insert(format!("evt_full_{n}"));
        }
        assert!(
            refused.len() > refused_before,
            "cycle {cycle}: nothing was refused while full"
        );
    }

    // Every acknowledged event arrives, signed; no refused one ever does.
    wait_for(
        "every acknowledged event at the receiver",
        DELIVERY_TIMEOUT,
        || {
            arrived(&sink, path)
                .is_superset(&acknowledged)
                .then_some(())
        },
    );
    assert_all_verified(&sink, &sink.requests_to(path), &[&secret]);
    let received = sink.requests_to(path).len();
    let delivered = arrived(&sink, path);
    let duplicates = received.saturating_sub(delivered.len());
    assert!(
        delivered.is_disjoint(&refused),
        "refused events were delivered: {:?}",
        delivered.intersection(&refused).collect::<Vec<_>>()
    );

    // SIGKILL and restart on the same disk: the log holds every acknowledged event and
    // no refused one.
    server.kill();
    let server = Server::start(&site, &options);
    let tenant = tenant.on(&server);
    let logged: BTreeSet<String> = deliveries(&tenant, &webhook_id, "")
        .iter()
        .filter_map(|d| d["event_id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = acknowledged.difference(&logged).collect();
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?}");
    assert!(
        logged.is_disjoint(&refused),
        "refused events were journaled"
    );
    println!(
        "storage: disk full {cycles} time(s): {} publishes acknowledged, {} refused with 503 ({} while waiting for space), 0 lost; duplicates at the receiver: {}",
        acknowledged.len(),
        refused.len(),
        waited,
        duplicates
    );
}

/// Offsets of the frames of a journal segment file (64-byte header, then frames of a
/// 32-byte header whose bytes 4..8 hold the payload length, padded to 16 bytes; a zero
/// header ends the log).
fn frame_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 64;
    while at + 32 <= segment.len() && segment[at..at + 32].iter().any(|&b| b != 0) {
        offsets.push(at);
        let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().expect("4 bytes"));
        at += 32 + (len as usize).div_ceil(16) * 16;
    }
    offsets
}

/// Runs `herald journal check` with `args`; returns (exit code, stdout, stderr).
fn journal_check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(herald_bin())
        .args(["journal", "check"])
        .args(args)
        .output()
        .expect("herald journal check runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_segment_damaged_in_the_middle_stops_start_up_naming_file_and_offset() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let options = Options::default().config(FAST_RETRIES);
    let server = Server::start(&site, &options);
    let tenant = create_tenant(&server.admin(), "tenant_damaged");
    create_webhook(
        &tenant,
        &json!({"url": sink.url("/damaged"), "events": ["order.*"]}),
    );
    let events = 30;
    for n in 0..events {
        publish(&tenant, &json!({"type": "order.created", "data": {"n": n}}));
    }
    let status = server.terminate();
    assert!(status.success(), "{status}");

    let journal = site.data_dir().join("engine").join("shard-0");
    let segment = std::fs::read_dir(&journal)
        .expect("the shard's journal directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).expect("the segment is readable");
    let frames = frame_offsets(&bytes);
    assert!(frames.len() > events, "{} frames", frames.len());
    // Damage one payload byte of a frame in the middle: intact frames follow it.
    let damaged = frames[frames.len() / 2];
    bytes[damaged + 40] ^= 0x20;
    std::fs::write(&segment, &bytes).expect("the segment is written");
    let after = frames.len() - frames.len() / 2 - 1;

    // Start-up refuses, naming the file and the offset, with the status that tells a
    // service manager not to restart it (3).
    let exited = run_to_exit(&site, &options, Duration::from_secs(30));
    let stderr = exited.stderr;
    assert_eq!(exited.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&segment.display().to_string())
            && stderr.contains(&format!("offset {damaged}")),
        "the error names the file and offset: {stderr}"
    );
    assert!(
        stderr.contains("herald journal check"),
        "the error says what to run: {stderr}"
    );

    // The check names it too and changes nothing; repair says what was lost.
    let dir = journal.to_str().expect("a UTF-8 path");
    let (code, _, check_err) = journal_check(&["--data-dir", dir]);
    assert_eq!(code, Some(1), "{check_err}");
    assert!(
        check_err.contains(&format!("segment {} offset {damaged}", segment.display()))
            && check_err.contains(&format!("{after} intact records follow it")),
        "{check_err}"
    );
    assert_eq!(std::fs::read(&segment).expect("readable"), bytes);
    let (code, repaired, repair_err) = journal_check(&["--data-dir", dir, "--repair"]);
    assert_eq!(code, Some(0), "{repaired}{repair_err}");
    let lost = after + 1;
    assert!(
        repaired.contains(&format!(
            "repaired: truncated {} at offset {damaged}",
            segment.display()
        )) && repaired.contains(&format!("lost {lost} records")),
        "{repaired}"
    );
    assert!(repaired.trim_end().ends_with("sound"), "{repaired}");

    // The server starts on what is left and serves.
    let server = Server::start(&site, &options);
    let tenant = tenant.on(&server);
    publish(
        &tenant,
        &json!({"type": "order.created", "data": {"after": "repair"}}),
    );
    println!(
        "storage: damaged frame at {} offset {damaged}: start-up refused (exit 1); repair lost {lost} records",
        segment.display()
    );
}

/// A data directory the file system refuses (here a file where the engine's directory
/// belongs) is not journal damage: start-up exits 3 naming the data directory and what
/// to check there, not `herald journal check`.
#[test]
fn a_data_dir_the_file_system_refuses_is_not_called_journal_damage() {
    let site = Site::new();
    std::fs::create_dir_all(site.data_dir()).expect("the data directory");
    std::fs::write(site.data_dir().join("engine"), b"not a directory").expect("a file");
    let exited = run_to_exit(&site, &Options::default(), Duration::from_secs(30));
    let stderr = exited.stderr;
    assert_eq!(exited.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&site.data_dir().display().to_string()) && stderr.contains("permissions"),
        "the error names the data directory and what to check: {stderr}"
    );
    assert!(
        !stderr.contains("herald journal check"),
        "nothing to check in a journal: {stderr}"
    );
}
