//! Helpers the journal's integration tests share.

use std::fs;
use std::path::{Path, PathBuf};

use herald_journal::Journal;

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
