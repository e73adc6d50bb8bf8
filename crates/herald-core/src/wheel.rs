//! Hierarchical timing wheel holding every pending delivery attempt of a shard.
//!
//! # Shape
//!
//! Time is counted in ticks of `tick_ms` milliseconds (default [`TICK_MS_DEFAULT`] = 10 ms).
//! The wheel has [`LEVELS`] levels of 64 slots; a slot at level `L` spans `64^L` ticks.
//! Eleven levels cover 66 bits, i.e. every `u64` tick, so there is **no horizon**: any
//! deadline a `u64` can express is stored exactly, with no overflow list and no clamping.
//! Deadlines a month out sit at level 4 (10 ms ticks) and are cascaded down at most four
//! times before they fire, so insert, cancel and expire are O(1) (expire amortised over the
//! cascades, which are bounded by the level count).
//!
//! A slot is a vector of entries `(due tick, slab index, value)`. The slab (a `Vec` plus
//! a free list) holds, per entry, only where it sits — its slot and its position in that
//! slot — and a generation. Cancelling swaps the slot's last entry into the cancelled
//! position and fixes that one entry's position, so cancel is O(1) like an intrusive
//! list; but cascading and expiring read each slot sequentially and fire values straight
//! out of it, instead of chasing one pointer per entry per level (a linked-list version
//! measured ~300 ns per expired entry at a million pending, one cache miss per entry per
//! cascade). On those paths the slab is only updated (positions, generations), never
//! consulted for what to do next.
//!
//! A [`TimerKey`] carries the slab index and a generation that changes whenever the entry is
//! removed, so a key that outlived its entry never cancels whatever reuses the index (up to
//! 2^32 reuses of one index while the stale key is held, when the generation wraps).
//!
//! # Rounding rule
//!
//! A deadline is rounded **up** to the next tick boundary: an entry with deadline `d` is
//! *due* at `due(d) = ceil(d / tick_ms) * tick_ms`, and fires on the first call to
//! [`TimingWheel::expire`] whose `now_ms` is at least `due(d)`. It therefore never fires
//! before its deadline and at most `tick_ms - 1` ms after it (plus the driver's own delay).
//! A deadline whose `due` exceeds `u64::MAX` (only possible within one tick of `u64::MAX`)
//! never fires. With `tick_ms = 1` the rule is exact.
//!
//! Time never runs backwards inside the wheel: a `now_ms` smaller than one seen before (at
//! construction or in an earlier `expire`) is treated as that earlier value. An entry whose
//! deadline is already due when it is inserted fires on the next `expire`, whatever `now_ms`
//! that call passes.
//!
//! The wheel is pure: it never reads a clock; time arrives only as arguments.

use std::fmt;
use std::num::NonZeroU64;

/// Default tick: the resolution promised for retry deadlines.
pub const TICK_MS_DEFAULT: u64 = 10;

/// Number of levels. 11 levels × 6 bits = 66 bits ≥ 64, so every `u64` tick fits.
pub const LEVELS: usize = 11;

const TICK_DEFAULT: NonZeroU64 = match NonZeroU64::new(TICK_MS_DEFAULT) {
    Some(tick) => tick,
    None => panic!("TICK_MS_DEFAULT is non-zero"),
};
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
const BUCKETS: usize = LEVELS * SLOTS;
/// Sentinel slab index ending the free list. Never a valid index because
/// `entries_max <= u32::MAX` keeps indices below `u32::MAX`.
const NIL: u32 = u32::MAX;
/// A slot emptied by a cascade keeps at most this many pairs of capacity, so a burst does
/// not pin memory in slots that refill slowly (64 KiB per slot).
const SLOT_CAPACITY_KEPT_MAX: usize = 4096;

/// Construction parameters of a [`TimingWheel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelConfig {
    /// Length of one tick; deadlines are rounded up to a multiple of it.
    pub tick_ms: NonZeroU64,
    /// Most entries pending at once. Bounded by `u32::MAX` because slab indices are `u32`
    /// (keeping [`TimerKey`] at 8 bytes).
    pub entries_max: u32,
}

impl Default for WheelConfig {
    fn default() -> Self {
        WheelConfig {
            tick_ms: TICK_DEFAULT,
            entries_max: u32::MAX,
        }
    }
}

/// Handle to one pending entry, returned by [`TimingWheel::insert`].
///
/// Copy and cheap (8 bytes). Once its entry fired or was cancelled the key is stale: every
/// lookup with it returns `None`, even after the slab index has been reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// The caller tried to insert while `entries_max` entries were pending; the value is handed
/// back untouched.
#[derive(Debug, PartialEq, Eq)]
pub struct WheelFull<T> {
    /// The value that was not inserted.
    pub value: T,
    /// The limit that was hit.
    pub entries_max: u32,
}

impl<T> fmt::Display for WheelFull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timing wheel full: {} entries pending (entries_max); caller must shed load",
            self.entries_max
        )
    }
}

impl<T: fmt::Debug> std::error::Error for WheelFull<T> {}

/// One entry as its slot stores it: enough to cascade or fire it without reading the
/// slab.
#[derive(Clone)]
struct SlotEntry<T> {
    /// Due tick (deadline rounded up to a tick).
    tick: u64,
    index: u32,
    value: T,
}

/// Where a live entry sits, or the next free node while vacant.
#[derive(Clone, Copy)]
struct Node {
    generation: u32,
    /// `level * SLOTS + slot` of the slot holding the entry; [`VACANT`] while free.
    bucket: u16,
    /// Position in that slot while occupied; next free node while vacant.
    pos: u32,
}

/// `Node::bucket` of a free node.
const VACANT: u16 = u16::MAX;

/// Hierarchical timing wheel; see the [module documentation](self) for the rounding rule.
#[derive(Clone)]
pub struct TimingWheel<T> {
    tick_ms: u64,
    entries_max: u32,
    /// Tick up to which slots have been processed. Invariants between calls: every entry at
    /// level `L > 0` shares the bits above level `L` with `elapsed` and sits in a slot after
    /// `elapsed`'s; level-0 entries share the bits above level 0 and sit at or after
    /// `elapsed`'s slot, where `elapsed`'s own slot holds only entries already due.
    elapsed: u64,
    /// Largest `now` seen, in ticks: time never runs backwards.
    now_tick_max: u64,
    /// Bit `s` of `occupied[L]` is set iff slot `s` of level `L` is non-empty.
    occupied: [u64; LEVELS],
    slots: Vec<Vec<SlotEntry<T>>>,
    nodes: Vec<Node>,
    free_head: u32,
    len: u32,
}

impl<T> fmt::Debug for TimingWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingWheel")
            .field("tick_ms", &self.tick_ms)
            .field("elapsed_tick", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline_ms", &self.next_deadline_ms())
            .finish()
    }
}

/// Mask of the low `bits` bits, saturating at all 64.
fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl<T> TimingWheel<T> {
    /// Empty wheel with the default configuration (10 ms tick), starting at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_config(now_ms, WheelConfig::default())
    }

    /// Empty wheel with the given tick and capacity, starting at `now_ms`.
    pub fn with_config(now_ms: u64, config: WheelConfig) -> Self {
        let tick_ms = config.tick_ms.get();
        let now_tick = now_ms / tick_ms;
        TimingWheel {
            tick_ms,
            entries_max: config.entries_max,
            elapsed: now_tick,
            now_tick_max: now_tick,
            occupied: [0; LEVELS],
            slots: (0..BUCKETS).map(|_| Vec::new()).collect(),
            nodes: Vec::new(),
            free_head: NIL,
            len: 0,
        }
    }

    /// Tick length in milliseconds.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Most entries that may be pending at once.
    pub fn entries_max(&self) -> u32 {
        self.entries_max
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Time at which an entry with this deadline becomes due under the rounding rule
    /// (`None` if that is beyond `u64::MAX`, i.e. never).
    pub fn due_ms(&self, deadline_ms: u64) -> Option<u64> {
        self.due_tick(deadline_ms).checked_mul(self.tick_ms)
    }

    /// Schedules `value` at `deadline_ms`.
    ///
    /// # Panics
    ///
    /// If `entries_max` entries are already pending; use [`TimingWheel::try_insert`] to get
    /// the value back instead.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerKey {
        match self.try_insert(deadline_ms, value) {
            Ok(key) => key,
            Err(full) => panic!("{full}"),
        }
    }

    /// Schedules `value` at `deadline_ms`, or hands it back when `entries_max` entries are
    /// pending.
    pub fn try_insert(&mut self, deadline_ms: u64, value: T) -> Result<TimerKey, WheelFull<T>> {
        if self.len >= self.entries_max {
            return Err(WheelFull {
                value,
                entries_max: self.entries_max,
            });
        }
        let tick = self.due_tick(deadline_ms);
        let index = if self.free_head != NIL {
            let index = self.free_head;
            self.free_head = self.nodes[index as usize].pos;
            index
        } else {
            // No free node means every node is occupied, so `nodes.len() == len <
            // entries_max <= u32::MAX`: the new index fits and is not NIL.
            let index = self.nodes.len() as u32;
            self.nodes.push(Node {
                generation: 0,
                bucket: VACANT,
                pos: NIL,
            });
            index
        };
        self.len += 1;
        self.place(SlotEntry { tick, index, value });
        Ok(TimerKey {
            index,
            generation: self.nodes[index as usize].generation,
        })
    }

    /// Removes a pending entry and returns its value; `None` if the key is stale (the entry
    /// already fired or was cancelled).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let node = *self.live_node(key)?;
        let (bucket, pos) = (node.bucket as usize, node.pos as usize);
        let slot = &mut self.slots[bucket];
        let entry = slot.swap_remove(pos);
        if let Some(moved) = slot.get(pos) {
            self.nodes[moved.index as usize].pos = pos as u32;
        } else if slot.is_empty() {
            self.occupied[bucket / SLOTS] &= !(1u64 << (bucket % SLOTS));
        }
        self.free(key.index);
        Some(entry.value)
    }

    /// The pending value behind `key`, if the key is live.
    pub fn get(&self, key: TimerKey) -> Option<&T> {
        self.entry(key).map(|e| &e.value)
    }

    /// Mutable access to the pending value behind `key`, if the key is live.
    pub fn get_mut(&mut self, key: TimerKey) -> Option<&mut T> {
        let node = *self.live_node(key)?;
        self.slots[node.bucket as usize]
            .get_mut(node.pos as usize)
            .map(|e| &mut e.value)
    }

    /// When the entry behind `key` becomes due (its deadline rounded up to a tick);
    /// `None` if the key is stale or the entry can never fire.
    pub fn due_ms_of(&self, key: TimerKey) -> Option<u64> {
        self.entry(key)?.tick.checked_mul(self.tick_ms)
    }

    fn entry(&self, key: TimerKey) -> Option<&SlotEntry<T>> {
        let node = self.live_node(key)?;
        self.slots[node.bucket as usize].get(node.pos as usize)
    }

    /// Appends to `out` every entry due at or before `now_ms` (see the rounding rule), in
    /// non-decreasing order of due tick; entries that were already due when inserted come
    /// first. Entries due in the same tick come in no particular (but deterministic) order.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<T>) {
        self.expire_bounded(now_ms, out, usize::MAX);
    }

    /// Like [`TimingWheel::expire`] but appends at most `entries_max` entries, the earliest
    /// due first; the rest stay due and fire on later calls. Returns how many were appended.
    /// Lets a driver bound the work of one turn after a long pause.
    pub fn expire_bounded(&mut self, now_ms: u64, out: &mut Vec<T>, entries_max: usize) -> usize {
        self.now_tick_max = self.now_tick_max.max(now_ms / self.tick_ms);
        let now_tick = self.now_tick_max;
        let mut fired = 0;
        while let Some((level, slot, start)) = self.next_expiration() {
            if start > now_tick {
                break;
            }
            if fired >= entries_max {
                return fired;
            }
            // `start >= elapsed`: the next expiration never lies behind the processed point.
            self.elapsed = start;
            let bucket = level * SLOTS + slot;
            let mut entries = std::mem::take(&mut self.slots[bucket]);
            if level == 0 {
                // Firing from the back leaves the positions of the rest untouched when the
                // bound stops us part-way through the slot.
                while fired < entries_max {
                    let Some(entry) = entries.pop() else { break };
                    self.free(entry.index);
                    out.push(entry.value);
                    fired += 1;
                }
                let done = entries.is_empty();
                self.slots[bucket] = entries;
                if !done {
                    return fired;
                }
            } else {
                // Every entry lands on a lower level, never back in this slot.
                for entry in entries.drain(..) {
                    self.place(entry);
                }
                entries.shrink_to(SLOT_CAPACITY_KEPT_MAX);
                self.slots[bucket] = entries;
            }
            self.occupied[level] &= !(1u64 << slot);
        }
        self.elapsed = now_tick;
        fired
    }

    /// The earliest time at which [`TimingWheel::expire`] can fire something, or `None` when
    /// nothing is pending. O(levels), no allocation.
    ///
    /// Never later than the due time of the earliest entry. It is exact when that entry is
    /// within 64 ticks of the wheel's current tick; otherwise it is the start of the coarse
    /// slot holding it, so a driver that sleeps until the returned time and calls `expire`
    /// may find nothing due yet and get a finer answer (at most one such early wake-up per
    /// level, four for deadlines a month out at 10 ms ticks). A value at or below the last
    /// `now_ms` passed in means something is due now. Saturates at `u64::MAX`.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.next_expiration()
            .map(|(_, _, start)| start.saturating_mul(self.tick_ms))
    }

    fn due_tick(&self, deadline_ms: u64) -> u64 {
        // Cannot overflow: for tick_ms >= 2 the quotient is at most u64::MAX / 2.
        deadline_ms / self.tick_ms + u64::from(!deadline_ms.is_multiple_of(self.tick_ms))
    }

    fn live_node(&self, key: TimerKey) -> Option<&Node> {
        let node = self.nodes.get(key.index as usize)?;
        (node.generation == key.generation && node.bucket != VACANT).then_some(node)
    }

    /// Lowest non-empty level's first occupied slot at or after the current one, with the
    /// tick at which that slot starts.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        for (level, &occupied) in self.occupied.iter().enumerate() {
            if occupied == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let current = (self.elapsed >> shift) & SLOT_MASK;
            debug_assert_eq!(
                occupied & low_mask(current as u32),
                0,
                "wheel invariant: no occupied slot behind the current one (level {level})"
            );
            let slot = occupied.trailing_zeros() as u64;
            let block = self.elapsed & !low_mask(shift + SLOT_BITS);
            return Some((level, slot as usize, block | (slot << shift)));
        }
        None
    }

    /// Appends an entry to the slot its tick belongs to relative to `elapsed`.
    fn place(&mut self, entry: SlotEntry<T>) {
        let (level, slot) = if entry.tick <= self.elapsed {
            // Already due: the current level-0 slot, which holds only due entries.
            (0, (self.elapsed & SLOT_MASK) as usize)
        } else {
            let significant = 63 - (entry.tick ^ self.elapsed).leading_zeros();
            let level = significant / SLOT_BITS;
            (
                level as usize,
                ((entry.tick >> (SLOT_BITS * level)) & SLOT_MASK) as usize,
            )
        };
        let bucket = level * SLOTS + slot;
        let entries = &mut self.slots[bucket];
        let node = &mut self.nodes[entry.index as usize];
        // BUCKETS = 704 fits in u16 below VACANT; a slot never holds more than
        // `len <= u32::MAX` entries.
        node.bucket = bucket as u16;
        node.pos = entries.len() as u32;
        entries.push(entry);
        self.occupied[level] |= 1u64 << slot;
    }

    /// Returns the node of an entry just taken out of its slot to the free list.
    fn free(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.generation = node.generation.wrapping_add(1);
        node.bucket = VACANT;
        node.pos = self.free_head;
        self.free_head = index;
        self.len -= 1;
    }

    /// Checks every structural invariant; O(len). For tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut count = 0usize;
        for (bucket, entries) in self.slots.iter().enumerate() {
            let (level, slot) = (bucket / SLOTS, bucket % SLOTS);
            assert_eq!(
                self.occupied[level] & (1u64 << slot) != 0,
                !entries.is_empty(),
                "occupied bit of level {level} slot {slot}"
            );
            for (pos, entry) in entries.iter().enumerate() {
                let node = &self.nodes[entry.index as usize];
                assert_eq!((node.bucket as usize, node.pos as usize), (bucket, pos));
                let shift = SLOT_BITS * level as u32;
                if entry.tick > self.elapsed {
                    let above = !low_mask(shift + SLOT_BITS);
                    assert_eq!(
                        entry.tick & above,
                        self.elapsed & above,
                        "shares upper bits"
                    );
                    assert_eq!((entry.tick >> shift) & SLOT_MASK, slot as u64);
                } else {
                    assert_eq!(level, 0, "due entries wait in level 0");
                    assert_eq!(slot as u64, self.elapsed & SLOT_MASK, "in the current slot");
                }
                count += 1;
            }
        }
        assert_eq!(count, self.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const DAY_MS: u64 = 86_400_000;

    fn wheel(now_ms: u64, tick_ms: u64) -> TimingWheel<u64> {
        TimingWheel::with_config(
            now_ms,
            WheelConfig {
                tick_ms: NonZeroU64::new(tick_ms).unwrap(),
                entries_max: u32::MAX,
            },
        )
    }

    fn expire_sorted(w: &mut TimingWheel<u64>, now_ms: u64) -> Vec<u64> {
        let mut out = Vec::new();
        w.expire(now_ms, &mut out);
        out.sort_unstable();
        out
    }

    /// Reference model: a map ordered by due time, as the rounding rule defines it.
    #[derive(Debug)]
    struct Model {
        tick_ms: u64,
        now_ms_max: u64,
        /// id -> (deadline_ms, due_ms); due may exceed u64::MAX (never fires).
        pending: BTreeMap<u64, (u64, u128)>,
    }

    impl Model {
        fn due(&self, deadline_ms: u64) -> u128 {
            let tick = u128::from(self.tick_ms);
            u128::from(deadline_ms).div_ceil(tick) * tick
        }

        fn due_ids(&self) -> Vec<u64> {
            let now = u128::from(self.now_ms_max);
            self.pending
                .iter()
                .filter(|(_, &(_, due))| due <= now)
                .map(|(&id, _)| id)
                .collect()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Deadline relative to the model's now (may be in the past).
        InsertRelative(i64),
        InsertAbsolute(u64),
        Cancel(usize),
        ExpireRelative(i64),
        ExpireAbsolute(u64),
        ExpireBounded(i64, usize),
    }

    fn relative() -> impl Strategy<Value = i64> {
        prop_oneof![
            -1_000i64..1_000,
            0i64..100_000,
            0i64..(2 * DAY_MS as i64),
            0i64..(400 * DAY_MS as i64),
            -(40 * DAY_MS as i64)..0,
            Just(0i64),
        ]
    }

    fn absolute() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0u64..10_000).prop_map(|x| u64::MAX - x),
            Just(u64::MAX),
            Just(0u64),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => relative().prop_map(Op::InsertRelative),
            1 => absolute().prop_map(Op::InsertAbsolute),
            3 => any::<usize>().prop_map(Op::Cancel),
            4 => relative().prop_map(Op::ExpireRelative),
            1 => absolute().prop_map(Op::ExpireAbsolute),
            2 => (relative(), 0usize..5).prop_map(|(r, k)| Op::ExpireBounded(r, k)),
        ]
    }

    fn offset(now_ms: u64, delta_ms: i64) -> u64 {
        now_ms.saturating_add_signed(delta_ms)
    }

    /// Checks one expire call's output against the model and removes the fired entries.
    fn check_fired(model: &mut Model, now_tick_before: u64, fired: &[u64], bounded: Option<usize>) {
        let due = model.due_ids();
        match bounded {
            None => {
                let mut sorted = fired.to_vec();
                sorted.sort_unstable();
                assert_eq!(sorted, due, "fired set differs from the model");
            }
            Some(k) => {
                assert_eq!(fired.len(), k.min(due.len()), "bounded expire count");
                for id in fired {
                    assert!(due.contains(id), "bounded expire fired {id} before due");
                }
            }
        }
        // Order: non-decreasing due tick, anything already due counting as the old now.
        let order_key = |id: &u64| {
            let (_, due) = model.pending[id];
            (due / u128::from(model.tick_ms)).max(u128::from(now_tick_before))
        };
        let keys: Vec<u128> = fired.iter().map(order_key).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "fire order {keys:?}");
        if let Some(&last) = keys.last() {
            let unfired_min = due
                .iter()
                .filter(|id| !fired.contains(id))
                .map(order_key)
                .min();
            if let Some(unfired_min) = unfired_min {
                assert!(
                    last <= unfired_min,
                    "bounded expire skipped an earlier entry"
                );
            }
        }
        for id in fired {
            let (deadline, _) = model.pending.remove(id).unwrap();
            assert!(deadline <= model.now_ms_max, "fired before its deadline");
        }
    }

    fn run_ops(start_ms: u64, tick_ms: u64, ops: &[Op]) {
        let mut w = wheel(start_ms, tick_ms);
        let mut model = Model {
            tick_ms,
            now_ms_max: start_ms,
            pending: BTreeMap::new(),
        };
        let mut keys: Vec<(TimerKey, u64)> = Vec::new();
        let mut next_id = 0u64;
        for op in ops {
            let now_tick_before = model.now_ms_max / tick_ms;
            match *op {
                Op::InsertRelative(_) | Op::InsertAbsolute(_) => {
                    let deadline = match *op {
                        Op::InsertRelative(d) => offset(model.now_ms_max, d),
                        Op::InsertAbsolute(a) => a,
                        _ => unreachable!(),
                    };
                    let key = w.insert(deadline, next_id);
                    let due = model.due(deadline);
                    model.pending.insert(next_id, (deadline, due));
                    assert_eq!(w.get(key), Some(&next_id));
                    assert_eq!(
                        w.due_ms_of(key).map(u128::from),
                        u64::try_from(due).ok().map(u128::from)
                    );
                    keys.push((key, next_id));
                    next_id += 1;
                }
                Op::Cancel(i) => {
                    if keys.is_empty() {
                        continue;
                    }
                    let (key, id) = keys[i % keys.len()];
                    let expected = model.pending.remove(&id).map(|_| id);
                    assert_eq!(w.cancel(key), expected, "cancel of {id}");
                    assert_eq!(w.cancel(key), None, "second cancel of {id}");
                }
                Op::ExpireRelative(_) | Op::ExpireAbsolute(_) => {
                    let now = match *op {
                        Op::ExpireRelative(d) => offset(model.now_ms_max, d),
                        Op::ExpireAbsolute(a) => a,
                        _ => unreachable!(),
                    };
                    model.now_ms_max = model.now_ms_max.max(now);
                    let mut out = Vec::new();
                    w.expire(now, &mut out);
                    check_fired(&mut model, now_tick_before, &out, None);
                }
                Op::ExpireBounded(d, k) => {
                    let now = offset(model.now_ms_max, d);
                    model.now_ms_max = model.now_ms_max.max(now);
                    let mut out = Vec::new();
                    let n = w.expire_bounded(now, &mut out, k);
                    assert_eq!(n, out.len());
                    check_fired(&mut model, now_tick_before, &out, Some(k));
                }
            }
            w.check_invariants();
            assert_eq!(w.len(), model.pending.len());
            assert_eq!(w.is_empty(), model.pending.is_empty());
            let earliest = model.pending.values().map(|&(_, due)| due).min();
            match (w.next_deadline_ms(), earliest) {
                (None, None) => {}
                (Some(next), Some(due)) => {
                    // Already-due entries may report any time up to the last now.
                    let bound = due.max(u128::from(model.now_ms_max));
                    assert!(
                        u128::from(next) <= bound,
                        "next_deadline {next} after due {due}"
                    )
                }
                (next, due) => panic!("next_deadline {next:?} but earliest due {due:?}"),
            }
        }
        drain_exactly(&mut w, &mut model);
    }

    /// A driver that sleeps until `next_deadline_ms` fires each entry exactly at its due
    /// time (or at once if already due), with a bounded number of early wake-ups.
    fn drain_exactly(w: &mut TimingWheel<u64>, model: &mut Model) {
        let mut wakeups = 0usize;
        let wakeups_max = (w.len() + 1) * (LEVELS + 1);
        let mut out = Vec::new();
        while let Some(next) = w.next_deadline_ms() {
            wakeups += 1;
            assert!(wakeups <= wakeups_max, "driver loop does not converge");
            let now = next.max(model.now_ms_max);
            let stuck = next <= model.now_ms_max;
            model.now_ms_max = now;
            out.clear();
            w.expire(now, &mut out);
            w.check_invariants();
            for id in &out {
                let (deadline, due) = model.pending.remove(id).unwrap();
                assert!(deadline <= now);
                assert!(
                    due <= u128::from(now),
                    "fired {id} at {now} before due {due}"
                );
                assert!(
                    stuck || due == u128::from(now),
                    "driver overslept: {id} due {due} fired at {now}"
                );
            }
            // Only saturation at u64::MAX can leave the next deadline at or before `now`
            // after a full expire: the remaining entries are past the end of time.
            if out.is_empty() && w.next_deadline_ms().is_some_and(|n| n <= now) {
                assert_eq!(now, u64::MAX);
                break;
            }
        }
        // Whatever is left can never become due (due beyond u64::MAX).
        for &(_, due) in model.pending.values() {
            assert!(due > u128::from(u64::MAX), "entry due {due} left behind");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matches_model(
            start in prop_oneof![Just(0u64), Just(1_700_000_000_000u64), (0u64..1_000).prop_map(|x| u64::MAX - x), any::<u64>()],
            tick in prop_oneof![Just(1u64), Just(7), Just(10), Just(1_000), Just(60_000)],
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            run_ops(start, tick, &ops);
        }
    }

    #[test]
    fn rounds_deadlines_up_to_the_tick() {
        // (tick, deadline, not yet at, fires at)
        let cases = [
            (10, 15, 19, 20),
            (10, 20, 19, 20),
            (10, 21, 29, 30),
            (1, 21, 20, 21),
            (7, 8, 13, 14),
        ];
        for (tick, deadline, before, at) in cases {
            let mut w = wheel(0, tick);
            w.insert(deadline, 1);
            assert_eq!(w.due_ms(deadline), Some(at));
            assert_eq!(w.next_deadline_ms(), Some(at));
            assert!(
                expire_sorted(&mut w, before).is_empty(),
                "tick {tick} deadline {deadline}"
            );
            assert_eq!(
                expire_sorted(&mut w, at),
                vec![1],
                "tick {tick} deadline {deadline}"
            );
        }
    }

    #[test]
    fn same_slot_entries_fire_together_and_cancel_from_the_middle() {
        let mut w = wheel(1_000, 10);
        let keys: Vec<TimerKey> = (0..5).map(|i| w.insert(1_500, i)).collect();
        assert_eq!(w.cancel(keys[2]), Some(2));
        assert_eq!(w.cancel(keys[0]), Some(0));
        assert_eq!(w.cancel(keys[4]), Some(4));
        assert!(expire_sorted(&mut w, 1_490).is_empty());
        assert_eq!(expire_sorted(&mut w, 1_500), vec![1, 3]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline_ms(), None);
    }

    #[test]
    fn level_boundaries_fire_exactly_on_their_tick() {
        let start_tick = 123_456_789u64;
        for level in 0..LEVELS as u32 {
            let span = 1u64.checked_shl(SLOT_BITS * level).unwrap_or(u64::MAX);
            for delta in [
                span.saturating_sub(1),
                span,
                span.saturating_add(1),
                span.saturating_mul(63),
                span.saturating_mul(64),
            ] {
                let delta = delta.max(1);
                let Some(due_tick) = start_tick.checked_add(delta) else {
                    continue;
                };
                let mut w = wheel(start_tick, 1);
                w.insert(due_tick, 7);
                w.insert(due_tick - 1, 6);
                let mut model = Model {
                    tick_ms: 1,
                    now_ms_max: start_tick,
                    pending: BTreeMap::new(),
                };
                model.pending.insert(7, (due_tick, u128::from(due_tick)));
                model
                    .pending
                    .insert(6, (due_tick - 1, u128::from(due_tick - 1)));
                drain_exactly(&mut w, &mut model);
                assert!(model.pending.is_empty(), "level {level} delta {delta}");
            }
        }
    }

    #[test]
    fn far_future_entries_never_fire_early() {
        let start = 1_700_000_000_000u64;
        let mut w = wheel(start, 10);
        let deadlines = [
            30 * DAY_MS,
            365 * DAY_MS,
            100 * 365 * DAY_MS,
            5 * DAY_MS + 3,
        ];
        for (i, d) in deadlines.iter().enumerate() {
            w.insert(start + d, i as u64);
        }
        for (i, d) in deadlines.iter().enumerate() {
            let due = w.due_ms(start + d).unwrap();
            let mut w2 = w.clone();
            let fired = expire_sorted(&mut w2, due - 1);
            assert!(!fired.contains(&(i as u64)), "entry {i} fired early");
            assert!(
                expire_sorted(&mut w2, due).contains(&(i as u64)),
                "entry {i} late"
            );
        }
    }

    #[test]
    fn time_jumps_of_days_fire_everything_due_once() {
        let mut w = wheel(0, 10);
        for i in 0..1_000u64 {
            w.insert(i * 3_600_000 + i, i);
        }
        let fired = expire_sorted(&mut w, 10 * DAY_MS);
        let expected: Vec<u64> = (0..1_000)
            .filter(|i| i * 3_600_000 + i <= 10 * DAY_MS)
            .collect();
        assert_eq!(fired, expected);
        assert!(expire_sorted(&mut w, 10 * DAY_MS).is_empty());
        let fired = expire_sorted(&mut w, 100 * DAY_MS);
        assert_eq!(fired.len() + expected.len(), 1_000);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_expire_even_if_time_runs_backwards() {
        let mut w = wheel(10_000, 10);
        w.insert(5, 1);
        w.insert(10_000, 2);
        assert_eq!(w.next_deadline_ms(), Some(10_000));
        assert_eq!(expire_sorted(&mut w, 0), vec![1, 2]);
        w.insert(10_005, 3);
        assert!(expire_sorted(&mut w, 3).is_empty());
        assert_eq!(expire_sorted(&mut w, 10_010), vec![3]);
    }

    #[test]
    fn u64_edges() {
        // Tick 1: u64::MAX is reachable and fires.
        let mut w = wheel(u64::MAX - 5, 1);
        w.insert(u64::MAX, 1);
        w.insert(0, 2);
        assert_eq!(expire_sorted(&mut w, u64::MAX - 1), vec![2]);
        assert_eq!(w.next_deadline_ms(), Some(u64::MAX));
        assert_eq!(expire_sorted(&mut w, u64::MAX), vec![1]);
        // Tick 10: u64::MAX rounds past the end of time and never fires.
        let mut w = wheel(0, 10);
        let key = w.insert(u64::MAX, 3);
        w.insert(u64::MAX - 5, 4);
        assert_eq!(w.due_ms(u64::MAX), None);
        assert_eq!(w.due_ms_of(key), None);
        assert_eq!(expire_sorted(&mut w, u64::MAX), vec![4]);
        assert_eq!(w.next_deadline_ms(), Some(u64::MAX));
        assert!(expire_sorted(&mut w, u64::MAX).is_empty());
        assert_eq!(w.cancel(key), Some(3));
        // A wheel started at the end of time fires past deadlines.
        let mut w = wheel(u64::MAX, 10);
        w.insert(0, 5);
        assert_eq!(expire_sorted(&mut w, 0), vec![5]);
    }

    #[test]
    fn stale_keys_never_touch_reused_entries() {
        let mut w = wheel(0, 10);
        let a = w.insert(100, 1);
        assert_eq!(expire_sorted(&mut w, 100), vec![1]);
        let b = w.insert(200, 2);
        assert_eq!(a.index, b.index, "slab index reused");
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.get(a), None);
        assert_eq!(w.get(b), Some(&2));
        *w.get_mut(b).unwrap() = 20;
        assert_eq!(w.cancel(b), Some(20));
        let c = w.insert(300, 3);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.len(), 1);
        assert_eq!(w.cancel(c), Some(3));
    }

    #[test]
    fn entries_max_is_enforced_and_gives_the_value_back() {
        let mut w: TimingWheel<&str> = TimingWheel::with_config(
            0,
            WheelConfig {
                entries_max: 2,
                ..WheelConfig::default()
            },
        );
        let a = w.insert(10, "a");
        w.insert(20, "b");
        assert_eq!(
            w.try_insert(30, "c"),
            Err(WheelFull {
                value: "c",
                entries_max: 2
            })
        );
        assert_eq!(w.cancel(a), Some("a"));
        assert!(w.try_insert(30, "c").is_ok());
        assert_eq!(w.len(), 2);
    }

    #[test]
    #[should_panic(expected = "entries_max")]
    fn insert_past_entries_max_panics() {
        let mut w: TimingWheel<u8> = TimingWheel::with_config(
            0,
            WheelConfig {
                entries_max: 1,
                ..WheelConfig::default()
            },
        );
        w.insert(10, 1);
        w.insert(10, 2);
    }

    #[test]
    fn expire_bounded_resumes_in_due_order() {
        let mut w = wheel(0, 10);
        for i in 0..10u64 {
            w.insert(100 - i * 10, i);
        }
        let mut out = Vec::new();
        assert_eq!(w.expire_bounded(1_000, &mut out, 3), 3);
        assert_eq!(out, vec![9, 8, 7]);
        assert_eq!(w.next_deadline_ms(), Some(40));
        out.clear();
        // An earlier `now` does not undo the due-ness established before.
        assert_eq!(w.expire_bounded(0, &mut out, 100), 7);
        assert_eq!(out, vec![6, 5, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn default_config_has_a_ten_ms_tick() {
        let w: TimingWheel<()> = TimingWheel::new(0);
        assert_eq!(w.tick_ms(), TICK_MS_DEFAULT);
        assert_eq!(w.entries_max(), u32::MAX);
        assert!(format!("{w:?}").contains("tick_ms: 10"));
    }
}
