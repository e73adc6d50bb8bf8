//! The simulator as a test: many seeds hold every invariant, runs are reproducible, and
//! the checker catches deliberately injected defects.

use herald_sim::{run_seed, run_seed_with, InjectedBug, Invariant, SimConfig};

/// Seeds run by `cargo test` (debug build); sized to stay well under a minute.
const SEEDS: u64 = 300;

#[test]
fn every_invariant_holds_across_seeds() {
    let mut sends = 0;
    let mut crashes = 0;
    let (mut checkpoints, mut amid, mut cut, mut copied) = (0, 0, 0, 0);
    let mut given_back = 0;
    for seed in 0..SEEDS {
        match run_seed(seed) {
            Ok(stats) => {
                sends += stats.sends;
                crashes += stats.crashes;
                checkpoints += stats.checkpoints;
                amid += stats.records_amid_checkpoints;
                cut += stats.checkpoints_cut;
                copied += u64::from(stats.checkpoint_copies_peak > 0);
                given_back += stats.tally.attempts_given_back;
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    // The scenarios must actually exercise delivery and recovery.
    assert!(sends > SEEDS, "only {sends} requests over {SEEDS} seeds");
    assert!(
        crashes > SEEDS / 2,
        "only {crashes} crashes over {SEEDS} seeds"
    );
    // And checkpoints written between other input: records between their parts,
    // deliveries that changed before their part was written, crashes part way through.
    assert!(
        checkpoints > SEEDS / 2,
        "only {checkpoints} checkpoints over {SEEDS} seeds"
    );
    assert!(
        amid > SEEDS,
        "only {amid} records between checkpoint parts over {SEEDS} seeds"
    );
    assert!(
        copied >= 10,
        "a checkpoint kept copies of changed deliveries in only {copied} of {SEEDS} seeds"
    );
    // Attempts the driver had no connection for: given back, never exhausting a
    // delivery, never opening a breaker (the checker holds both).
    assert!(
        given_back >= 20,
        "only {given_back} attempts given back over {SEEDS} seeds"
    );
    assert!(
        cut >= 5,
        "only {cut} checkpoints cut short by a crash over {SEEDS} seeds"
    );
}

/// With many management operations per run, tenants lose their last webhook and are
/// purged, amid crashes and checkpoints, and every invariant still holds (a replay that
/// dropped less than the live purge did is caught as a log that replays differently).
#[test]
fn tenants_purged_amid_crashes_and_checkpoints_replay_as_they_ran() {
    let config = SimConfig {
        manual_ops_max: 60,
        ..SimConfig::default()
    };
    let mut purge_steps = 0;
    for seed in 0..SEEDS / 3 {
        match run_seed_with(seed, &config) {
            Ok(stats) => purge_steps += stats.purge_steps,
            Err(violation) => panic!("{violation}"),
        }
    }
    assert!(
        purge_steps >= 20,
        "only {purge_steps} purge steps over {} seeds",
        SEEDS / 3
    );
}

#[test]
fn same_seed_same_run() {
    for seed in [1, 7, 42] {
        let first = run_seed(seed).unwrap();
        let second = run_seed(seed).unwrap();
        assert_eq!(first, second, "seed {seed}");
    }
    assert_ne!(
        run_seed(1).unwrap().trace_hash,
        run_seed(2).unwrap().trace_hash
    );
}

/// A seed's trace (every record and request the dispatcher emitted, hashed) is pinned:
/// the same on every machine, build and release, so that a failing seed reported anywhere
/// replays here. The generator is ChaCha8, whose stream its crate promises never to
/// change; `rand`'s range sampling on top of it may change in a major `rand` release
/// (0.8 to 0.9 did). A mismatch means the simulated behaviour, a record's layout or the
/// sampling changed: if that was meant, re-pin with the hashes
/// `herald-sim --seed N --verbose` prints.
#[test]
fn pinned_seeds_give_pinned_traces() {
    const PINNED: [(u64, u64); 4] = [
        (1, 0xf578_c44a_de37_5983),
        (7, 0xb7f3_2c98_6c91_683d),
        (42, 0xe810_8f57_91f3_473d),
        (299, 0x196d_b5a4_906d_d81c),
    ];
    let traces: Vec<(u64, u64)> = PINNED
        .iter()
        .map(|&(seed, _)| (seed, run_seed(seed).unwrap().trace_hash))
        .collect();
    assert_eq!(
        traces, PINNED,
        "traces moved (seed, hash); see this test's documentation"
    );
}

#[test]
fn injected_bugs_are_caught() {
    let cases = [
        (
            InjectedBug::LoseOutcomes,
            &[Invariant::Delivered, Invariant::InFlightCap][..],
        ),
        (
            InjectedBug::DuplicateSends,
            &[Invariant::AttemptBudget, Invariant::InFlightCap][..],
        ),
        (InjectedBug::CrossTenant, &[Invariant::TenantIsolation][..]),
        (InjectedBug::LooseRateLimit, &[Invariant::RateLimit][..]),
        (
            InjectedBug::ForgetDurable,
            &[Invariant::Durability, Invariant::Routing][..],
        ),
    ];
    for (bug, expected) in cases {
        let config = SimConfig {
            bug: Some(bug),
            ..SimConfig::default()
        };
        let caught: Vec<Invariant> = (0..40)
            .filter_map(|seed| run_seed_with(seed, &config).err())
            .map(|v| v.invariant)
            .collect();
        assert!(
            caught.len() >= 5,
            "{bug:?} caught in only {} of 40 seeds",
            caught.len()
        );
        for invariant in &caught {
            assert!(
                expected.contains(invariant),
                "{bug:?} reported as {invariant:?}, expected one of {expected:?}"
            );
        }
    }
}

#[test]
fn a_run_that_does_not_end_is_a_violation() {
    // steps_max is the simulator's own limit: a dispatcher that keeps asking to be woken
    // up (or endless retries) must fail the run rather than hang it.
    let config = SimConfig {
        steps_max: 3,
        ..SimConfig::default()
    };
    let violation = (0..20)
        .find_map(|seed| run_seed_with(seed, &config).err())
        .expect("some seed needs more than 3 steps");
    assert_eq!(violation.invariant, Invariant::Progress);
}

#[test]
fn management_operations_and_crashes_together_hold() {
    let config = SimConfig {
        manual_ops_max: 20,
        crashes_max: 10,
        crash_per_step_p: 0.05,
        checkpoints_max: 10,
        ..SimConfig::default()
    };
    let mut manual_ops = 0;
    for seed in 0..60 {
        match run_seed_with(seed, &config) {
            Ok(stats) => manual_ops += stats.manual_ops,
            Err(violation) => panic!("{violation}"),
        }
    }
    assert!(manual_ops > 100, "only {manual_ops} management operations");
}
