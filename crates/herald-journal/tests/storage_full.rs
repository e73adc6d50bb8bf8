//! Disk full: on a small tmpfs (a real filesystem that really runs out of
//! space), a roll that cannot preallocate its segment fails the append with a
//! storage error, nothing acknowledged is lost, and appends work again once
//! space is freed.
//!
//! Mounting needs CAP_SYS_ADMIN (root here and in CI). Where mounting is not
//! permitted the test says so on stderr and checks nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use herald_journal::{Fault, Journal, JournalConfig, JournalError, SEGMENT_BYTES_MIN};

/// Held for the whole of each test (mount to unmount): the tests in this file run as
/// threads of one process, and a child that one of them starts (`mount`, `umount`)
/// holds a copy of every open descriptor between its fork and its exec, the journal's
/// directory lock included, so a journal reopened at that moment in another test
/// would find its directory locked.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unmounts on drop, even when an assertion fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, bytes: u64) -> Option<Mount> {
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={bytes}"),
            "herald-journal-test",
        ])
        .arg(at)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| Mount(at.to_path_buf()))
}

/// Fills the filesystem holding `dir` with a file, leaving less than a segment.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let file = fs::File::create(&path).unwrap();
    let chunk = vec![1u8; 4096];
    let mut writer = std::io::BufWriter::new(file);
    use std::io::Write;
    while writer.write_all(&chunk).is_ok() {}
    drop(writer);
    path
}

#[test]
fn enospc_on_roll_fails_the_append_then_recovers() {
    let _serial = serial();
    let mountpoint = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(mountpoint.path(), 1024 * 1024) else {
        eprintln!("storage_full: cannot mount tmpfs here (not root?); skipped");
        return;
    };
    let dir = mountpoint.path().join("journal");
    let mut config = JournalConfig::new(&dir);
    config.segment_bytes = SEGMENT_BYTES_MIN;
    let (mut journal, _) = Journal::open(config.clone()).unwrap();
    let filler = fill(mountpoint.path());

    let payload = vec![7u8; 1000];
    let mut acknowledged = 0;
    let err = loop {
        match journal.append(1, 1, &payload) {
            Ok(seq) => {
                acknowledged = journal.sync().unwrap();
                assert_eq!(acknowledged, seq);
            }
            Err(e) => break e,
        }
    };
    assert!(err.is_storage_full(), "{err}");
    assert_eq!(err.fault(), Fault::Storage);
    assert!(err.to_string().contains("fallocate"), "{err}");
    assert!(acknowledged > 0);
    // A failed append takes no sequence number and leaves no partial segment
    // (a spare prepared before the disk filled may have served one roll).
    assert_eq!(journal.last_seq(), acknowledged);
    let segments = journal.segment_count();
    assert!((1..=2).contains(&segments), "{segments}");
    // The background preparer may still be failing its own attempt: wait
    // (bounded) for it to give the space back.
    let temp_files = || {
        fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while temp_files() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(temp_files(), 0, "failed preallocations are removed");
    assert!(journal
        .append(1, 1, &payload)
        .unwrap_err()
        .is_storage_full());
    // The journal itself is unharmed: syncing still works.
    assert_eq!(journal.sync().unwrap(), acknowledged);

    fs::remove_file(&filler).unwrap();
    let seq = journal.append(1, 1, &payload).unwrap();
    assert_eq!(seq, acknowledged + 1);
    assert_eq!(journal.sync().unwrap(), seq);
    assert_eq!(journal.segment_count(), segments + 1);
    drop(journal);

    let (journal, recovery) = Journal::open(config).unwrap();
    assert_eq!(recovery.last_seq, Some(seq));
    assert_eq!(recovery.torn_tail, None);
    let replayed: Vec<u64> = journal.replay().map(|f| f.unwrap().seq).collect();
    assert_eq!(replayed, (1..=seq).collect::<Vec<_>>());
    assert!(journal
        .replay()
        .all(|f| f.unwrap().payload == payload.as_slice()));
}

/// The probe a driver uses while the disk is full: `ensure_room` fails with the
/// storage-full error as long as no segment can be made, takes no sequence
/// number and leaves no file behind; once space is freed it rolls, and the next
/// append lands in the new segment. With room in the active segment it does
/// nothing.
#[test]
fn ensure_room_probes_until_space_frees() {
    let _serial = serial();
    let mountpoint = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(mountpoint.path(), 1024 * 1024) else {
        eprintln!("storage_full: cannot mount tmpfs here (not root?); skipped");
        return;
    };
    let dir = mountpoint.path().join("journal");
    let mut config = JournalConfig::new(&dir);
    config.segment_bytes = SEGMENT_BYTES_MIN;
    let (mut journal, _) = Journal::open(config.clone()).unwrap();
    let payload = vec![9u8; 3000];
    // Room in the active segment: nothing happens.
    journal.ensure_room(payload.len() as u64).unwrap();
    assert_eq!(journal.segment_count(), 1);
    assert_eq!(journal.last_seq(), 0);

    let filler = fill(mountpoint.path());
    let err = loop {
        match journal.append(1, 1, &payload) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(err.is_storage_full(), "{err}");
    let durable = journal.sync().unwrap();
    assert_eq!(durable, journal.last_seq());
    let segments = journal.segment_count();
    for _ in 0..5 {
        let probe = journal.ensure_room(payload.len() as u64).unwrap_err();
        assert!(probe.is_storage_full(), "{probe}");
        assert_eq!(probe.fault(), Fault::Storage);
    }
    assert_eq!(
        journal.last_seq(),
        durable,
        "a probe takes no sequence number"
    );
    assert_eq!(journal.segment_count(), segments);
    // Nothing is acknowledged that is not durable, and syncing still works.
    assert_eq!(journal.sync().unwrap(), durable);

    fs::remove_file(&filler).unwrap();
    journal.ensure_room(payload.len() as u64).unwrap();
    assert_eq!(journal.segment_count(), segments + 1, "the probe rolled");
    // A second probe finds room and does nothing.
    journal.ensure_room(payload.len() as u64).unwrap();
    assert_eq!(journal.segment_count(), segments + 1);
    let seq = journal.append(1, 1, &payload).unwrap();
    assert_eq!(seq, durable + 1);
    assert_eq!(journal.sync().unwrap(), seq);
    drop(journal);

    let (journal, recovery) = Journal::open(config).unwrap();
    assert_eq!(recovery.last_seq, Some(seq));
    assert_eq!(recovery.torn_tail, None);
    let replayed: Vec<u64> = journal.replay().map(|f| f.unwrap().seq).collect();
    assert_eq!(replayed, (1..=seq).collect::<Vec<_>>());
}

/// Where the journal's hole starts in the active segment: past the records appended
/// before it, on a page boundary.
const HOLE_FROM: u64 = 64 * 1024;

/// A fresh 8 MiB tmpfs for a journal of 1 MiB segments (unmounted when dropped, before
/// its mount point is removed).
struct Tmpfs {
    _mount: Mount,
    mountpoint: tempfile::TempDir,
    dir: PathBuf,
    config: JournalConfig,
}

impl Tmpfs {
    /// `None` where mounting is not permitted (said on stderr).
    fn mount() -> Option<Tmpfs> {
        let mountpoint = tempfile::tempdir().unwrap();
        let Some(mount) = mount_tmpfs(mountpoint.path(), 8 * 1024 * 1024) else {
            eprintln!("storage_full: cannot mount tmpfs here (not root?); skipped");
            return None;
        };
        let dir = mountpoint.path().join("journal");
        let mut config = JournalConfig::new(&dir);
        config.segment_bytes = 1024 * 1024;
        Some(Tmpfs {
            _mount: mount,
            mountpoint,
            dir,
            config,
        })
    }
}

/// Punches a hole from [`HOLE_FROM`] to the end of the journal's one segment in `dir`:
/// its preallocated blocks go, as on a filesystem where preallocation reserves none.
/// Waits first for the spare segment the journal prepares in the background, so that a
/// spare failing for want of space once the disk is filled cannot give space back.
fn punch_hole(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let spare_ready = || {
        fs::read_dir(dir).unwrap().any(|e| {
            use std::os::unix::fs::MetadataExt;
            // Renamed into place or removed since it was listed: not a spare.
            let Some(e) = e.ok() else { return false };
            let Ok(meta) = e.metadata() else { return false };
            e.file_name().to_string_lossy().ends_with(".seg.tmp")
                && meta.len() > 0
                && meta.blocks() * 512 >= meta.len()
        })
    };
    while !spare_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "no spare segment prepared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let segments: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let segment = fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    let len = segment.metadata().unwrap().len();
    rustix::fs::fallocate(
        &segment,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        HOLE_FROM,
        len - HOLE_FROM,
    )
    .unwrap();
}

/// On a filesystem where a preallocated segment holds no blocks (one that copies on
/// write, or thin storage; here a hole punched in the segment on a full tmpfs) a
/// commit's write finds no space part way. The frames it wrote whole stay and become
/// durable; the rest are withdrawn, and their sequence numbers go to the next records.
/// Appends are refused until the owner resumes the journal, a probe fails until space
/// frees, and a reopened journal holds the kept frames and those appended after, none
/// of the withdrawn ones.
#[test]
fn enospc_on_write_withdraws_the_frames_it_did_not_write() {
    let _serial = serial();
    let Some(site) = Tmpfs::mount() else {
        return;
    };
    let (dir, config) = (site.dir.clone(), site.config.clone());
    let (mut journal, _) = Journal::open(config.clone()).unwrap();
    let payload = vec![5u8; 1000];
    for _ in 0..3 {
        journal.append(1, 1, &payload).unwrap();
    }
    assert_eq!(journal.sync().unwrap(), 3);

    punch_hole(&dir);
    let filler = fill(site.mountpoint.path());

    // A turn's records, staged, then written at once: those past the hole's start
    // find no space.
    for i in 0..100u64 {
        assert_eq!(journal.append(1, 1, &payload).unwrap(), 4 + i);
    }
    let err = journal.commit().unwrap_err();
    assert!(err.is_storage_full(), "{err}");
    assert_eq!(err.fault(), Fault::Storage);
    let from = journal.withdrawn_from().expect("the write withdrew frames");
    assert!((4..103).contains(&from), "kept some, withdrew some: {from}");
    assert_eq!(journal.last_seq(), from - 1);
    // Records 4..=103 were appended; those from `from` on are counted withdrawn.
    assert_eq!(
        journal.withdrawn_bytes(),
        (104 - from) * herald_journal::frame_bytes(payload.len() as u64)
    );
    let refused = journal.append(1, 1, &payload).unwrap_err();
    assert!(
        matches!(refused, JournalError::Withdrawn { from_seq, .. } if from_seq == from),
        "{refused}"
    );
    // It names the write's OS error, which tells a full device from a full quota.
    assert!(
        refused.to_string().contains("No space left on device"),
        "{refused}"
    );
    assert!(refused.is_storage_full());
    // What was written whole becomes durable.
    assert_eq!(journal.sync().unwrap(), from - 1);

    journal.resume_after_withdrawal();
    for _ in 0..3 {
        let probe = journal.ensure_room(payload.len() as u64).unwrap_err();
        assert!(probe.is_storage_full(), "{probe}");
    }
    assert_eq!(
        journal.last_seq(),
        from - 1,
        "a probe takes no sequence number"
    );
    fs::remove_file(&filler).unwrap();
    journal.ensure_room(payload.len() as u64).unwrap();
    let after = vec![6u8; 1000];
    assert_eq!(journal.append(1, 1, &after).unwrap(), from);
    assert_eq!(journal.sync().unwrap(), from);
    drop(journal);

    let (journal, recovery) = Journal::open(config).unwrap();
    assert_eq!(recovery.last_seq, Some(from));
    let replayed: Vec<(u64, Vec<u8>)> = journal
        .replay()
        .map(|f| {
            let f = f.unwrap();
            (f.seq, f.payload.to_vec())
        })
        .collect();
    assert_eq!(
        replayed.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (1..=from).collect::<Vec<_>>()
    );
    for (seq, bytes) in &replayed {
        let expected = if *seq == from { &after } else { &payload };
        assert_eq!(bytes, expected, "record {seq}");
    }
}

/// A checkpoint whose end marker a write that found no space withdrew does not count:
/// the one before it stays the latest, now and after a reopen.
#[test]
fn a_withdrawn_checkpoint_leaves_the_one_before_it_the_latest() {
    let _serial = serial();
    let Some(site) = Tmpfs::mount() else {
        return;
    };
    let (dir, config) = (site.dir.clone(), site.config.clone());
    let (mut journal, _) = Journal::open(config.clone()).unwrap();
    journal.append(1, 1, b"before").unwrap();
    journal.checkpoint(b"state-1").unwrap();
    let first = journal.checkpoint_last_seq().expect("a checkpoint");
    journal.sync().unwrap();

    punch_hole(&dir);
    let filler = fill(site.mountpoint.path());

    // A part that runs past the hole's start, and its end marker after it.
    journal.checkpoint(&vec![2u8; 70_000]).unwrap();
    assert_ne!(journal.checkpoint_last_seq(), Some(first));
    let err = journal.commit().unwrap_err();
    assert!(err.is_storage_full(), "{err}");
    assert_eq!(journal.checkpoint_last_seq(), Some(first));
    assert_eq!(journal.sync().unwrap(), first);

    journal.resume_after_withdrawal();
    fs::remove_file(&filler).unwrap();
    journal.ensure_room(8).unwrap();
    let after = journal.append(1, 1, b"after").unwrap();
    assert_eq!(after, first + 1);
    assert_eq!(journal.sync().unwrap(), after);
    drop(journal);

    let (journal, _) = Journal::open(config).unwrap();
    assert_eq!(journal.checkpoint_last_seq(), Some(first));
    let replayed: Vec<Vec<u8>> = journal
        .replay()
        .map(|f| f.unwrap().payload.to_vec())
        .collect();
    assert_eq!(replayed, [b"state-1".to_vec(), b"after".to_vec()]);
}
