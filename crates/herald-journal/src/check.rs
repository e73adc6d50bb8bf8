//! Read-only validation of a journal directory (`herald journal check`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::{scan_segment_after, ScanStop, SEGMENT_HEADER_BYTES};
use crate::journal::{
    covered_before, gap_defect, judge_damage, list_segments, missing_history, newer_format,
    CoveredSegments, MissingHistory, TornTail,
};

/// One segment as found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment file.
    pub path: PathBuf,
    /// Its file length.
    pub file_bytes: u64,
    /// Sequence number of its first frame (from the header; 0 if unreadable).
    pub base_seq: u64,
    /// Valid frames.
    pub records: u64,
    /// Bytes of valid frames.
    pub bytes: u64,
    /// Written over a segment file used before (format version 2): the bytes after its
    /// last frame are that earlier use's, not zeros.
    pub reused: bool,
}

/// Corruption before the tail: the journal is not sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// What is wrong.
    pub defect: String,
    /// Intact records found after the damage in the same segment: what a repair loses
    /// beyond the damaged stretch itself (with every later segment).
    pub records_after: u64,
    /// A segment file of a format this build does not read, at the corruption or after
    /// it: no repair proceeds (it would delete that file), and nothing changes; run the
    /// build that wrote it instead. `None`: a repair mends the corruption.
    pub newer_format: Option<PathBuf>,
}

/// What [`check`] found. Counts, sequence numbers and the checkpoint describe what a
/// repair keeps: the segments after any it deletes whole as covered ([`Self::covered`]),
/// up to the first problem among them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// Every segment, oldest first (those a repair deletes whole included).
    pub segments: Vec<SegmentSummary>,
    /// Valid records up to the first problem.
    pub records: u64,
    /// First sequence number present.
    pub first_seq: Option<u64>,
    /// Last valid sequence number before any problem.
    pub last_seq: Option<u64>,
    /// Bytes of valid frames.
    pub bytes: u64,
    /// Sequence number of the latest checkpoint's first frame.
    pub checkpoint_seq: Option<u64>,
    /// The latest checkpoint holds the state after every frame up to this sequence
    /// number: recovery replays the ordinary frames after it.
    pub checkpoint_covers_seq: Option<u64>,
    /// A torn tail in the last segment (sound: open truncates it).
    pub torn_tail: Option<TornTail>,
    /// Damage or a gap that a repair mends by deleting the segment files up to it whole,
    /// losing nothing, because a later complete checkpoint covers every record in them
    /// (as [`crate::Journal::open`] with `repair` does). Open without repair refuses the
    /// journal until then.
    pub covered: Option<CoveredSegments>,
    /// The first corruption before the tail in what a repair keeps (after the segments
    /// it deletes as [`Self::covered`]), if any: where a repair truncates.
    pub corruption: Option<Corruption>,
    /// Records replay needs that no segment holds: the first segment starts after the
    /// record following what the latest complete checkpoint read covers (judged on what a
    /// repair would keep: after the segments it deletes as covered, before any
    /// corruption). Open refuses such a journal, repair included; only restoring the
    /// missing segment files from a backup mends it.
    pub history_missing: Option<MissingHistory>,
    /// Another handle held the journal when the check began ([`crate::in_use`]): it was
    /// read while it changed, and a gap, a missing segment or damage found may be a
    /// roll, a compaction or a reuse under way rather than a fault (check it again, or
    /// with the process stopped, before repairing).
    pub in_use: bool,
    /// What the durable mark says: the last sequence number a sync made durable
    /// (`None`: no mark that decodes, so the end of the log cannot be checked against
    /// what was acknowledged; see [`crate::Recovery::durable_mark`]).
    pub durable_mark: Option<u64>,
    /// A sync, rename or write of this journal failed and no open has read it since
    /// ([`crate::SYNC_FAILED_FILE`], with what it says). When no process held the
    /// journal, the check read the segments from the disk, not the page cache (which
    /// after a failed writeback may hold frames the disk does not).
    pub after_failure: Option<String>,
}

impl CheckReport {
    /// Sound: no damage or gap before the tail, and no record replay needs missing.
    pub fn is_sound(&self) -> bool {
        self.corruption.is_none() && self.covered.is_none() && self.history_missing.is_none()
    }
}

/// Validates every frame of the journal in `dir` without changing anything.
/// Corruption, a log that ends before the durable mark and records replay needs missing
/// before the first segment are reported in the result; errors are only for unreadable
/// files.
pub fn check(dir: &Path) -> Result<CheckReport, JournalError> {
    // Read before the segments: on a journal in use, the mark only moves on after the
    // frames it covers are in them.
    let in_use = crate::journal::in_use(dir)?;
    let durable_mark = crate::mark::read(dir)?;
    let listed = list_segments(dir, false)?;
    let after_failure = crate::journal::failure_mark(dir)?;
    if after_failure.is_some() && !in_use {
        for (_, path) in &listed {
            crate::journal::drop_cached_pages(path)?;
        }
    }
    let mut report = CheckReport {
        in_use,
        durable_mark,
        after_failure,
        ..CheckReport::default()
    };
    let count = listed.len();
    let mut expected_base: Option<u64> = None;
    let mut open_checkpoint = None;
    // The first segment a repair keeps, after those it deletes whole as covered.
    let mut kept_from = 0;
    let mut i = 0;
    while i < count {
        let (name_base, path) = (listed[i].0, listed[i].1.clone());
        let is_last = i + 1 == count;
        i += 1;
        let bytes = fs::read(&path).map_err(|e| JournalError::io("read", &path, e))?;
        let mut summary = SegmentSummary {
            path: path.clone(),
            file_bytes: bytes.len() as u64,
            base_seq: 0,
            records: 0,
            bytes: 0,
            reused: false,
        };
        if report.corruption.is_some() {
            report.segments.push(summary);
            continue;
        }
        let scan = match scan_segment_after(&bytes, open_checkpoint.take()) {
            Ok(scan) => scan,
            Err(defect) => {
                report.segments.push(summary);
                // As a repair: a damaged header is damage at the file's start, and this
                // file goes with every one before it when a later checkpoint covers them.
                let damage = (path.clone(), 0, defect.to_string());
                let covered = defect
                    .is_damage()
                    .then(|| covered_before(&listed, i, damage, i - kept_from, report.records))
                    .flatten();
                if let Some(covered) = covered {
                    kept_from = i;
                    report = start_over(report, covered);
                    (expected_base, open_checkpoint) = (None, None);
                    continue;
                }
                let newer_format = (!defect.is_damage()).then(|| path.clone());
                report.corruption = Some(Corruption {
                    segment: path,
                    offset: 0,
                    defect: defect.to_string(),
                    records_after: 0,
                    newer_format,
                });
                continue;
            }
        };
        summary.base_seq = scan.header.base_seq;
        summary.reused = scan.header.reused;
        let expected = expected_base.unwrap_or(name_base);
        if scan.header.base_seq != expected || name_base != scan.header.base_seq {
            let defect = format!(
                "segment starts at seq {} but seq {expected} must come next",
                scan.header.base_seq
            );
            // As a repair: a gap (the segment file's name agrees with its header) that a
            // later checkpoint covers goes with every segment before it. Reported at the
            // end of the segment before it, as the repair reports it.
            let previous = report
                .segments
                .last()
                .filter(|_| name_base == scan.header.base_seq);
            let gap = previous.map(|p| {
                let offset = SEGMENT_HEADER_BYTES + p.bytes;
                (p.path.clone(), offset, gap_defect(expected, name_base))
            });
            let covered = gap.and_then(|gap| {
                covered_before(&listed, i - 1, gap, i - 1 - kept_from, report.records)
            });
            if let Some(covered) = covered {
                // This segment is read again, as the first one kept.
                (kept_from, i) = (i - 1, i - 1);
                report = start_over(report, covered);
                (expected_base, open_checkpoint) = (None, None);
                continue;
            }
            report.corruption = Some(Corruption {
                segment: path,
                offset: 0,
                defect,
                records_after: 0,
                newer_format: None,
            });
            report.segments.push(summary);
            continue;
        }
        summary.records = scan.records;
        summary.bytes = scan.end_offset - SEGMENT_HEADER_BYTES;
        report.records += scan.records;
        report.bytes += summary.bytes;
        if scan.records > 0 {
            report.first_seq.get_or_insert(scan.header.base_seq);
            report.last_seq = Some(scan.last_seq);
        }
        if let Some(span) = scan.last_checkpoint {
            report.checkpoint_seq = Some(span.first_seq);
            report.checkpoint_covers_seq = Some(span.covers_seq);
        }
        open_checkpoint = scan.open_checkpoint;
        expected_base = Some(scan.last_seq + 1);
        report.segments.push(summary);
        if let ScanStop::Invalid {
            offset,
            defect,
            dirty_end,
        } = scan.stop.clone()
        {
            // As on open.
            match judge_damage(
                &bytes,
                &scan,
                &path,
                is_last,
                durable_mark,
                (offset, &defect, dirty_end),
            ) {
                Ok(torn) => report.torn_tail = Some(torn),
                Err(intact) => {
                    // As a repair: this segment and every one before it go whole when a
                    // later checkpoint covers every record in them.
                    let damage = (path.clone(), offset, defect.to_string());
                    let records = report.records;
                    match covered_before(&listed, i, damage, i - kept_from, records) {
                        Some(covered) => {
                            kept_from = i;
                            report = start_over(report, covered);
                            (expected_base, open_checkpoint) = (None, None);
                        }
                        None => {
                            report.corruption = Some(Corruption {
                                segment: path,
                                offset,
                                defect: defect.to_string(),
                                records_after: intact.map_or(0, |i| i.frames),
                                newer_format: None,
                            })
                        }
                    }
                }
            }
        }
    }
    // As on open: records the mark says were made durable must all be here.
    let last_seq = expected_base.map_or(0, |next| next - 1);
    if let (None, Some(mark)) = (&report.corruption, durable_mark) {
        if mark > last_seq {
            let last = report.segments.last();
            report.corruption = Some(Corruption {
                segment: last.map_or_else(|| dir.to_path_buf(), |s| s.path.clone()),
                offset: last.map_or(0, |s| SEGMENT_HEADER_BYTES + s.bytes),
                defect: format!(
                    "the log ends at seq {last_seq}, but records up to seq {mark} were made \
                     durable (seq {}..={mark} missing)",
                    last_seq + 1
                ),
                records_after: 0,
                newer_format: None,
            });
        }
    }
    // As a repair: a segment of a format this build does not read, from the corruption
    // on, stops it before it deletes anything.
    if let Some(corruption) = report.corruption.as_mut() {
        let from: Vec<PathBuf> = listed
            .iter()
            .map(|(_, path)| path.clone())
            .skip_while(|path| *path != corruption.segment)
            .collect();
        if corruption.newer_format.is_none() {
            corruption.newer_format = newer_format(&from).map(|(path, _)| path);
        }
    }
    // As on open: replay needs every record after what the latest complete checkpoint
    // covers. Judged on what was read before any corruption, which is what a repair
    // keeps, so that a repair refused for it is known beforehand.
    // A first file whose header does not decode is judged by its name's base, where a
    // repair that truncates there starts the journal again.
    report.history_missing = report.segments.get(kept_from).and_then(|first| {
        let first_seq = match first.base_seq {
            0 => listed[kept_from].0,
            base_seq => base_seq,
        };
        missing_history(first_seq, &first.path, report.checkpoint_covers_seq)
    });
    Ok(report)
}

/// `report` as it starts over after the segments a repair deletes whole as `covered`:
/// what it says of the journal is about the segments kept, read from the next one on.
fn start_over(report: CheckReport, covered: CoveredSegments) -> CheckReport {
    CheckReport {
        segments: report.segments,
        covered: Some(covered.after(report.covered)),
        in_use: report.in_use,
        durable_mark: report.durable_mark,
        ..CheckReport::default()
    }
}
