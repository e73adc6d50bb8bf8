//! A full disk under the engine: the data directory sits on a small tmpfs this test
//! mounts. Publishing until the journal cannot roll to a new segment gets
//! `Error::Storage` (never a stopped shard); a refused event is not carried out;
//! queries still work; once the filler file is deleted the shard takes changes again by
//! itself; every acknowledged event is delivered, and after a restart the journal
//! holds every one of them.
//!
//! Mounting needs CAP_SYS_ADMIN (root here and in CI). Where mounting is not permitted
//! the test says so on stderr and checks nothing.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald::{
    DeliveryQuery, Error, EventFilter, Fault, Herald, Scheme, TenantId, Url, WebhookSpec,
};
use support::Receiver;

/// Upper bound of every wait; a passing run takes a small fraction of it.
const WAIT: Duration = Duration::from_secs(30);
/// Most publishes tried before the disk must have filled (each carries ~1 KiB; the
/// filesystem is 1 MiB).
const PUBLISHES_MAX: usize = 5_000;
/// Journal segments of the smallest size: the disk fills after a few hundred events.
const SEGMENT_BYTES: u64 = 64 * 1024;

/// Unmounts on drop, even when an assertion fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, bytes: u64) -> Option<Mount> {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "herald-test"])
        .arg(at)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| Mount(at.to_path_buf()))
}

/// Fills the filesystem holding `dir` with one file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut writer = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let chunk = vec![1u8; 4096];
    while writer.write_all(&chunk).is_ok() {}
    // The last buffered bytes may not fit either.
    let _ = writer.flush();
    path
}

fn engine(dir: &Path) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(1)
        .allow_cidr("127.0.0.0/8")
        .journal_segment_bytes(SEGMENT_BYTES)
        .shutdown_grace(Duration::from_secs(2))
        .start()
        .expect("engine starts")
}

fn event(n: usize) -> herald::Event {
    support::padded_event("evt_full", n)
}

#[test]
fn a_full_disk_refuses_changes_then_service_resumes_by_itself() {
    let mountpoint = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(mountpoint.path(), 1024 * 1024) else {
        eprintln!("storage_full: cannot mount tmpfs here (not root?); skipped");
        return;
    };
    let data = mountpoint.path().join("data");
    let receiver = Receiver::start();
    let tenant = TenantId::parse("acme").unwrap();
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[7; 32]);
    let herald = engine(&data);
    let webhook = herald
        .create_webhook(
            &tenant,
            WebhookSpec::new(
                Url::parse(&receiver.url("/full")).unwrap(),
                vec![EventFilter::parse("order.*").unwrap()],
                Scheme::Standard,
                secret.clone(),
            ),
        )
        .unwrap();
    let filler = fill(mountpoint.path());

    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut n = 0;
    let error = loop {
        assert!(n < PUBLISHES_MAX, "the disk never filled");
        let id = format!("evt_full_{n}");
        match herald.publish(&tenant, event(n)) {
            Ok(got) => {
                assert_eq!(got.to_string(), id);
                acknowledged.insert(id);
            }
            Err(error) => {
                refused.insert(id);
                break error;
            }
        }
        n += 1;
    };
    assert!(
        matches!(error, Error::Storage { .. }),
        "a full disk is a storage error: {error:?}"
    );
    assert_eq!(error.fault(), Fault::Storage);
    assert!(
        error.to_string().contains("No space left on device"),
        "the error says why: {error}"
    );
    // The journal's own error is in the chain, and under it the OS's.
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next = std::error::Error::source(&error);
    while let Some(cause) = next {
        chain.push(cause);
        next = cause.source();
    }
    assert!(
        chain
            .iter()
            .any(|e| e.downcast_ref::<herald_journal::JournalError>().is_some()),
        "the journal's error is a source: {chain:?}"
    );
    assert!(
        chain.iter().any(|e| e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull)),
        "the OS's error is a source: {chain:?}"
    );
    assert!(
        !acknowledged.is_empty(),
        "some events fitted before the disk filled"
    );

    // While the disk stays full: changes are refused at once, queries are answered.
    for _ in 0..3 {
        n += 1;
        let id = format!("evt_full_{n}");
        let error = herald.publish(&tenant, event(n)).unwrap_err();
        assert!(matches!(error, Error::Storage { .. }), "{error:?}");
        refused.insert(id);
    }
    let another = herald.create_webhook(
        &tenant,
        WebhookSpec::new(
            Url::parse(&receiver.url("/other")).unwrap(),
            vec![EventFilter::parse("*").unwrap()],
            Scheme::Standard,
            secret.clone(),
        ),
    );
    assert!(matches!(another, Err(Error::Storage { .. })), "{another:?}");
    assert!(herald.webhook(&tenant, &webhook).unwrap().is_some());
    herald
        .deliveries(DeliveryQuery::tenant(tenant.clone()))
        .expect("queries are answered while the disk is full");

    // Space frees: the shard takes changes again by itself (it probes with backoff).
    std::fs::remove_file(&filler).unwrap();
    n += 1;
    let resumed_from = n;
    support::wait_for(WAIT, || {
        n += 1;
        match herald.publish(&tenant, event(n)) {
            Ok(id) => {
                acknowledged.insert(id.to_string());
                Some(())
            }
            Err(Error::Storage { .. }) => {
                refused.insert(format!("evt_full_{n}"));
                None
            }
            Err(other) => panic!("after space freed: {other:?}"),
        }
    });
    for _ in 0..20 {
        n += 1;
        acknowledged.insert(herald.publish(&tenant, event(n)).unwrap().to_string());
    }
    assert!(n > resumed_from);

    // Every acknowledged event arrives; no refused one ever does.
    let received =
        receiver.wait_until(WAIT, |r| support::arrived_ids(r).is_superset(&acknowledged));
    let ids = support::arrived_ids(&received);
    support::assert_none_refused_delivered(&ids, &refused);
    herald.shutdown().expect("a clean stop");
    drop(herald);

    // After a restart the journal holds every acknowledged event and no refused one.
    let herald = engine(&data);
    support::assert_journal_holds(&herald, &tenant, &acknowledged, &refused);
    eprintln!(
        "storage_full: {} acknowledged, {} refused while the disk was full, none lost",
        acknowledged.len(),
        refused.len()
    );
}
