//! The README's curl quickstart, run as written: its shell blocks are taken from
//! README.md and run by bash against the real binary, with only the build step dropped,
//! `target/release/herald` replaced by the binary under test and the two fixed ports
//! replaced by free ones, so the README cannot drift from behaviour.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use herald_e2e::*;

const README: &str = include_str!("../../../README.md");
const START: &str = "### Quickstart with curl";
const END: &str = "Everything else";

/// The `sh` code blocks of the quickstart section, in order.
fn quickstart_blocks() -> Vec<String> {
    let start = README
        .find(START)
        .expect("README has the quickstart section");
    let section = &README[start..];
    let section = &section[..section.find(END).expect("the quickstart section ends")];
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest[..rest.find("```").expect("code block closes")].to_string())
        .collect()
}

fn free_port() -> u16 {
    // Bound and released at once: a port the system just handed out is free for a while.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn readme_quickstart_runs_as_written() {
    let blocks = quickstart_blocks();
    assert!(
        blocks.len() >= 3,
        "the quickstart has its blocks: {blocks:?}"
    );
    let script = blocks.join("\n");
    for needed in [
        "serve --allow-loopback",
        "sink --listen",
        "/v1/tenants",
        "/v1/events",
    ] {
        assert!(script.contains(needed), "the quickstart uses {needed}");
    }
    let (api_port, sink_port) = (free_port(), free_port());
    let bin = herald_bin().display().to_string();
    let script = script
        .replace("cargo build --release -p herald-cli\n", "")
        .replace("target/release/herald", &bin)
        .replace(
            "serve --allow-loopback",
            &format!("serve --allow-loopback --listen 127.0.0.1:{api_port}"),
        )
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{api_port}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{sink_port}"));
    let site = Site::new();
    // Background jobs (server, receiver) are stopped however the script ends.
    let wrapped = format!("set -u\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}\n");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&wrapped)
        .current_dir(site.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bash runs");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("script output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.is_some_and(|s| s.success()),
        "the quickstart failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The last command lists successful deliveries: the test send and the published
    // event, both verified by the receiver (it refuses a bad signature).
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"data\""))
        .unwrap_or_else(|| panic!("no delivery listing in\n{stdout}\n{stderr}"));
    let listing: serde_json::Value = serde_json::from_str(last).expect("the listing is JSON");
    let data = listing["data"].as_array().expect("data is a list");
    assert_eq!(data.len(), 2, "two successful deliveries: {last}");
    assert!(data.iter().all(|d| d["status"] == "success"), "{last}");
    let types: Vec<&str> = data
        .iter()
        .filter_map(|d| d["event_type"].as_str())
        .collect();
    assert_eq!(types, ["order.created", "order.created"], "{last}");
}
