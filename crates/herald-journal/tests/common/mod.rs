//! Helpers the journal's integration tests share.

use std::fs;
use std::path::{Path, PathBuf};

use herald_journal::{format, Journal};

/// The directory's segment files, in name (and so sequence) order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Every frame replay gives, checkpoint parts included, as sequence number and payload.
pub fn replayed(journal: &Journal) -> Vec<(u64, Vec<u8>)> {
    journal
        .replay_all()
        .map(|f| {
            let f = f.unwrap();
            (f.seq, f.payload.to_vec())
        })
        .collect()
}

/// Every segment file of `dir` and its durable mark if there is one, with their bytes
/// (temporary files of an interrupted roll are not part of the journal: open removes
/// them): what a refused open or repair must leave as it was.
#[allow(dead_code)] // Not every test binary that shares this module compares files.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = segment_files(dir);
    let mark = dir.join(format::DURABLE_MARK_FILE);
    if mark.exists() {
        files.push(mark);
    }
    files
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}
