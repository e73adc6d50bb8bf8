//! What writing a segment's batches costs by the size of each `pwrite`, into new pages.
//!
//!     cargo run --release -p herald-journal --example write_pieces -- [DIR] [ROUNDS]
//!
//! Each round, for each piece size, creates a 64 MiB file in DIR (default: the current
//! directory; put it on the disk the journal uses, not `tmpfs`), allocates it with
//! `fallocate` as the journal does, and fills it with 256 KiB batches that start off any
//! alignment (like staged frames after a segment header), each written in pieces that end
//! on multiples of the piece size (`0`: the batch in one `pwrite`), with an `fdatasync`
//! after every MiB. It prints the time spent in `pwrite` per 4 KiB of file, the median
//! over the rounds and the spread. The pages are new to the page cache each time: what
//! the journal pays for every segment that is not a reused file.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FILE_BYTES: u64 = 64 * 1024 * 1024;
const BATCH_BYTES: usize = 256 * 1024;
const SYNC_EVERY: u64 = 1024 * 1024;
/// Piece sizes tried; 0 is the whole batch at once.
const PIECES: [u64; 5] = [0, 16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024];

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let rounds: usize = match args.next() {
        Some(n) => n.parse().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "ROUNDS: a number")
        })?,
        None => 5,
    };
    let path = dir.join("write-pieces.tmp");
    let batch: Vec<u8> = (0..BATCH_BYTES).map(|i| (i % 251) as u8 + 1).collect();
    let mut per_page: Vec<Vec<f64>> = vec![Vec::new(); PIECES.len()];
    for round in 0..rounds {
        for (k, &piece) in PIECES.iter().enumerate() {
            let _ = std::fs::remove_file(&path);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, FILE_BYTES)?;
            let mut at = 48u64;
            let mut synced = 0u64;
            let mut in_write = Duration::ZERO;
            while at + BATCH_BYTES as u64 <= FILE_BYTES {
                // Batches of slightly different lengths, so their starts move.
                let len = BATCH_BYTES - (at as usize / BATCH_BYTES % 7) * 16;
                let started = Instant::now();
                let mut written = 0usize;
                while written < len {
                    let offset = at + written as u64;
                    let room = match piece {
                        0 => len - written,
                        p => (p - offset % p) as usize,
                    };
                    let n = room.min(len - written);
                    file.write_all_at(&batch[written..written + n], offset)?;
                    written += n;
                }
                in_write += started.elapsed();
                at += len as u64;
                if at - synced >= SYNC_EVERY {
                    file.sync_data()?;
                    synced = at;
                }
            }
            drop(file);
            std::fs::remove_file(&path)?;
            let pages = at as f64 / 4096.0;
            per_page[k].push(in_write.as_secs_f64() * 1e6 / pages);
            eprintln!(
                "round {} piece {:>6}: {:.2} µs per 4 KiB",
                round + 1,
                piece,
                per_page[k].last().copied().unwrap_or(0.0)
            );
        }
    }
    println!("| piece | µs per 4 KiB, median | spread |");
    println!("|---|---|---|");
    for (k, &piece) in PIECES.iter().enumerate() {
        let v = &mut per_page[k];
        v.sort_by(f64::total_cmp);
        let name = match piece {
            0 => "the batch at once".to_owned(),
            p => format!("{} KiB", p / 1024),
        };
        println!(
            "| {name} | {:.2} | {:.2}–{:.2} |",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
    Ok(())
}
