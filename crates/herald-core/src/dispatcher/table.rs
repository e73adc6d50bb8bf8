//! [`IdTable`]: values by delivery id in one sorted array, for the dispatcher's held
//! deliveries; [`IdSet`]: the same for a set of ids, for each tenant's index of them.
//!
//! Delivery ids are handed out in increasing order and never reused, so new deliveries
//! always go at the end, and the deliveries held are a sorted run with gaps where some
//! left the log. A `BTreeMap` filled in id order keeps its nodes about half full: ~35
//! bytes per delivery for the key, the pointer and the empty half. This table keeps an
//! `(id, value)` pair of 16 bytes per entry in a `VecDeque`, finds ids by binary search,
//! marks removed entries empty and drops them when they reach either end or, in bulk,
//! once they are a third of the entries, so its memory stays within a small factor of
//! what it holds.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

use crate::ids::DeliveryId;

/// Removed entries kept before a compaction is considered at all: a small table is
/// compacted rarely, however its removals fall.
const EMPTY_ENTRIES_KEPT_MIN: usize = 64;

/// The same floor for an [`IdSet`]. There is one set per tenant, and a platform may have
/// a great many tenants holding a few deliveries each: a set that once held hundreds of
/// ids and now holds a handful keeps a few dozen bytes, not a kilobyte. Compaction stays
/// amortised (it runs once removed entries outnumber half of those held).
const SET_EMPTY_ENTRIES_KEPT_MIN: usize = 8;

/// Values by [`DeliveryId`], iterated in id order.
#[derive(Clone, Debug)]
pub(super) struct IdTable<V> {
    /// In strictly increasing id order; `None` marks a removed value whose entry has not
    /// been dropped yet. Neither end is `None`.
    entries: VecDeque<(DeliveryId, Option<V>)>,
    /// Entries holding a value.
    len: usize,
}

impl<V> Default for IdTable<V> {
    fn default() -> Self {
        IdTable {
            entries: VecDeque::new(),
            len: 0,
        }
    }
}

/// An entry's value with its id, if it holds one.
fn held<V>((id, value): &(DeliveryId, Option<V>)) -> Option<(&DeliveryId, &V)> {
    value.as_ref().map(|value| (id, value))
}

/// An entry's value with its id, to change, if it holds one.
fn held_mut<V>((id, value): &mut (DeliveryId, Option<V>)) -> Option<(&DeliveryId, &mut V)> {
    value.as_mut().map(|value| (&*id, value))
}

impl<V> IdTable<V> {
    /// Values held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Position of `id` among the entries, or where it would go.
    fn search(&self, id: DeliveryId) -> Result<usize, usize> {
        // An id past the last entry (a new delivery, checked before it is inserted) is
        // known absent without a search.
        match self.entries.back() {
            None => return Err(0),
            Some((last, _)) if *last < id => return Err(self.entries.len()),
            _ => {}
        }
        // Ids are handed out one after another, and deliveries mostly leave the log from
        // the front: `id` is usually as far from the first entry as its number is from
        // the first id, found with one probe instead of a search that misses the cache
        // at every step of a large table. Otherwise (entries compacted in between), a
        // binary search.
        let guess = self
            .entries
            .front()
            .and_then(|(first, _)| id.0.checked_sub(first.0))
            .and_then(|offset| usize::try_from(offset).ok());
        if let Some(index) = guess {
            if self.entries.get(index).is_some_and(|(at, _)| *at == id) {
                return Ok(index);
            }
        }
        self.entries.binary_search_by_key(&id, |(entry, _)| *entry)
    }

    /// The value of `id`.
    pub(super) fn get(&self, id: &DeliveryId) -> Option<&V> {
        let index = self.search(*id).ok()?;
        self.entries[index].1.as_ref()
    }

    /// The value of `id`, to change.
    pub(super) fn get_mut(&mut self, id: &DeliveryId) -> Option<&mut V> {
        let index = self.search(*id).ok()?;
        self.entries[index].1.as_mut()
    }

    /// Whether `id` has a value.
    pub(super) fn contains_key(&self, id: &DeliveryId) -> bool {
        self.get(id).is_some()
    }

    /// Sets the value of `id`, returning the one it replaced. An id past every entry
    /// (the dispatcher's only case) is appended; one below the last is put in place,
    /// moving the entries after it.
    pub(super) fn insert(&mut self, id: DeliveryId, value: V) -> Option<V> {
        let index = match self.entries.back() {
            Some((last, _)) if *last >= id => self.search(id),
            _ => Err(self.entries.len()),
        };
        let old = match index {
            Ok(index) => self.entries[index].1.replace(value),
            Err(index) => {
                self.entries.insert(index, (id, Some(value)));
                None
            }
        };
        if old.is_none() {
            self.len += 1;
        }
        self.check_ends();
        old
    }

    /// Removes the value of `id`.
    #[cfg(test)]
    fn remove(&mut self, id: &DeliveryId) -> Option<V> {
        self.remove_if(id, |_| true)
    }

    /// Removes the value of `id` if `pred` holds for it: one search where a look-up and
    /// then a removal would make two.
    pub(super) fn remove_if(
        &mut self,
        id: &DeliveryId,
        pred: impl FnOnce(&V) -> bool,
    ) -> Option<V> {
        let index = self.search(*id).ok()?;
        if !self.entries[index].1.as_ref().is_some_and(pred) {
            return None;
        }
        let removed = self.entries[index].1.take()?;
        self.len -= 1;
        while self.entries.front().is_some_and(|(_, v)| v.is_none()) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|(_, v)| v.is_none()) {
            self.entries.pop_back();
        }
        let empty = self.entries.len() - self.len;
        if empty > EMPTY_ENTRIES_KEPT_MIN.max(self.len / 2) {
            // At least half as many removals as values held since the last compaction:
            // amortised, each removal moves at most three entries.
            self.entries.retain(|(_, v)| v.is_some());
        }
        if self.entries.capacity() > 2 * self.entries.len().max(EMPTY_ENTRIES_KEPT_MIN) {
            // Give back what a drained backlog left: a million deliveries held 16 MB.
            self.entries
                .shrink_to(self.entries.len() + self.entries.len() / 2);
        }
        self.check_ends();
        Some(removed)
    }

    /// The entries' invariants that hold after every change, asserted where they are
    /// made (cheap: the ends and two counts).
    fn check_ends(&self) {
        assert!(
            self.entries.front().is_none_or(|(_, v)| v.is_some())
                && self.entries.back().is_none_or(|(_, v)| v.is_some()),
            "bug: a delivery table ends with a removed entry"
        );
        assert!(
            self.len <= self.entries.len(),
            "bug: a delivery table counts more values than entries"
        );
    }

    /// Index range of the entries with ids in `range`.
    fn indices(&self, range: &impl RangeBounds<DeliveryId>) -> std::ops::Range<usize> {
        let start = match range.start_bound() {
            Bound::Included(id) => self.entries.partition_point(|(e, _)| e < id),
            Bound::Excluded(id) => self.entries.partition_point(|(e, _)| e <= id),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(id) => self.entries.partition_point(|(e, _)| e <= id),
            Bound::Excluded(id) => self.entries.partition_point(|(e, _)| e < id),
            Bound::Unbounded => self.entries.len(),
        };
        start..end.max(start)
    }

    /// The values with ids in `range`, in id order.
    pub(super) fn range(
        &self,
        range: impl RangeBounds<DeliveryId>,
    ) -> impl DoubleEndedIterator<Item = (&DeliveryId, &V)> {
        let indices = self.indices(&range);
        self.entries.range(indices).filter_map(held)
    }

    /// The values with ids in `range`, in id order, to change.
    pub(super) fn range_mut(
        &mut self,
        range: impl RangeBounds<DeliveryId>,
    ) -> impl DoubleEndedIterator<Item = (&DeliveryId, &mut V)> {
        let indices = self.indices(&range);
        self.entries.range_mut(indices).filter_map(held_mut)
    }

    /// Every value, in id order.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&DeliveryId, &V)> {
        self.entries.iter().filter_map(held)
    }

    /// Every value, in id order.
    pub(super) fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Every value, in id order, to change.
    pub(super) fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> {
        self.entries.iter_mut().filter_map(|(_, v)| v.as_mut())
    }

    /// Entries kept, removed ones included (for tests of the table's bound).
    #[cfg(test)]
    fn entries_len(&self) -> usize {
        self.entries.len()
    }
}

/// Delivery ids in increasing order, 8 bytes each: [`IdTable`]'s layout for a set, for
/// the tenants' indexes of their held deliveries (where a `BTreeSet` filled in id order
/// took ~20 bytes per delivery). The same rules: new ids go at the end, removed ones are
/// marked and dropped at either end or in bulk.
#[derive(Clone, Debug, Default)]
pub(super) struct IdSet {
    /// `id << 1 | 1` for an id held, `id << 1` for one removed whose entry has not been
    /// dropped yet: in strictly increasing order of id, and neither end removed.
    entries: VecDeque<u64>,
    /// Ids held.
    len: usize,
}

/// The bit of an [`IdSet`] entry that says its id is held.
const HELD: u64 = 1;

/// Delivery ids an [`IdSet`] can hold are below this: one bit of each entry is the
/// held bit. Ids come from a counter that starts at 1 and grows by one per delivery (and
/// per generated event), so a shard would need 2^63 of them to get here; replay refuses
/// records naming ids at or past it rather than reach the assertion in `insert`.
pub(super) const DELIVERY_ID_END: u64 = 1 << 63;

impl IdSet {
    /// Ids held (for the debug builds' recount and the tests).
    #[cfg(any(test, debug_assertions))]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether no id is held.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn search(&self, id: DeliveryId) -> Result<usize, usize> {
        // The front first: the delivery log drops its oldest entries, which are mostly
        // the lowest ids their tenants hold, and a set may hold tens of thousands.
        if self.entries.front().is_some_and(|front| front >> 1 == id.0) {
            return Ok(0);
        }
        self.entries.binary_search_by_key(&id.0, |entry| entry >> 1)
    }

    /// Whether `id` is held (for the debug builds' recount and the tests).
    #[cfg(any(test, debug_assertions))]
    pub(super) fn contains(&self, id: &DeliveryId) -> bool {
        self.search(*id)
            .is_ok_and(|index| self.entries[index] & HELD != 0)
    }

    /// Adds `id`; false if it was held. An id past every entry (the dispatcher's only
    /// case) is appended; one below the last is put in place, moving the entries after
    /// it.
    pub(super) fn insert(&mut self, id: DeliveryId) -> bool {
        assert!(
            id.0 < DELIVERY_ID_END,
            "bug: delivery id {id} does not leave room for the held bit"
        );
        let index = match self.entries.back() {
            Some(last) if last >> 1 >= id.0 => self.search(id),
            _ => Err(self.entries.len()),
        };
        let added = match index {
            Ok(index) => {
                let added = self.entries[index] & HELD == 0;
                self.entries[index] |= HELD;
                added
            }
            Err(index) => {
                self.entries.insert(index, id.0 << 1 | HELD);
                true
            }
        };
        self.len += usize::from(added);
        self.check_ends();
        added
    }

    /// Removes `id`; false if it was not held.
    pub(super) fn remove(&mut self, id: &DeliveryId) -> bool {
        let Ok(index) = self.search(*id) else {
            return false;
        };
        if self.entries[index] & HELD == 0 {
            return false;
        }
        self.entries[index] &= !HELD;
        self.len -= 1;
        while self.entries.front().is_some_and(|e| e & HELD == 0) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|e| e & HELD == 0) {
            self.entries.pop_back();
        }
        let empty = self.entries.len() - self.len;
        if empty > SET_EMPTY_ENTRIES_KEPT_MIN.max(self.len / 2) {
            // As in `IdTable::remove`: amortised, at most three moves per removal.
            self.entries.retain(|e| e & HELD != 0);
        }
        if self.entries.capacity() > 2 * self.entries.len().max(SET_EMPTY_ENTRIES_KEPT_MIN) {
            self.entries
                .shrink_to(self.entries.len() + self.entries.len() / 2);
        }
        self.check_ends();
        true
    }

    /// As [`IdTable::check_ends`].
    fn check_ends(&self) {
        assert!(
            self.entries.front().is_none_or(|e| e & HELD != 0)
                && self.entries.back().is_none_or(|e| e & HELD != 0),
            "bug: a delivery id set ends with a removed entry"
        );
        assert!(
            self.len <= self.entries.len(),
            "bug: a delivery id set counts more ids than entries"
        );
    }

    /// The ids held from `from` on, in order.
    pub(super) fn range_from(&self, from: DeliveryId) -> impl Iterator<Item = DeliveryId> + '_ {
        let start = self.entries.partition_point(|e| e >> 1 < from.0);
        self.entries
            .range(start..)
            .filter(|e| *e & HELD != 0)
            .map(|e| DeliveryId(e >> 1))
    }

    /// Every id held, in order (for the tests).
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = DeliveryId> + '_ {
        self.range_from(DeliveryId(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn id(n: u64) -> DeliveryId {
        DeliveryId(n)
    }

    #[test]
    fn appends_finds_and_removes() {
        let mut t = IdTable::default();
        for n in 1..=10 {
            assert_eq!(t.insert(id(n), n * 10), None);
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.get(&id(4)), Some(&40));
        assert_eq!(t.get(&id(11)), None);
        assert_eq!(t.remove(&id(4)), Some(40));
        assert_eq!(t.remove(&id(4)), None);
        assert!(!t.contains_key(&id(4)));
        assert_eq!(t.len(), 9);
        // Removed only where the predicate holds.
        assert_eq!(t.remove_if(&id(6), |&v| v == 61), None);
        assert_eq!(t.get(&id(6)), Some(&60));
        assert_eq!(t.remove_if(&id(6), |&v| v == 60), Some(60));
        assert_eq!(t.remove_if(&id(6), |_| true), None);
        assert_eq!(t.len(), 8);
        assert_eq!(t.insert(id(6), 60), None);
        assert_eq!(t.len(), 9);
        if let Some(v) = t.get_mut(&id(5)) {
            *v = 55;
        }
        let in_range: Vec<(u64, u64)> = t.range(id(3)..=id(6)).map(|(k, v)| (k.0, *v)).collect();
        assert_eq!(in_range, [(3, 30), (5, 55), (6, 60)]);
        let before: Vec<u64> = t.range(..id(5)).rev().map(|(k, _)| k.0).collect();
        assert_eq!(before, [3, 2, 1]);
        assert_eq!(t.values().next_back(), Some(&100));
    }

    #[test]
    fn an_id_below_the_last_goes_in_place() {
        let mut t = IdTable::default();
        t.insert(id(5), 5);
        t.insert(id(1), 1);
        t.insert(id(3), 3);
        assert_eq!(t.insert(id(3), 33), Some(3));
        let ids: Vec<u64> = t.iter().map(|(k, _)| k.0).collect();
        assert_eq!(ids, [1, 3, 5]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn removed_entries_stay_bounded() {
        // One old value held while a million later ones come and go: the entries
        // stay within a small factor of the values held.
        let mut t = IdTable::default();
        t.insert(id(0), 0u64);
        for n in 1..1_000_000u64 {
            t.insert(id(n), n);
            if n >= 100 {
                t.remove(&id(n - 99));
            }
            assert!(t.entries_len() <= 3 * t.len() / 2 + EMPTY_ENTRIES_KEPT_MIN + 1);
        }
        assert_eq!(t.len(), 100);
        assert!(t.entries.capacity() <= 4 * (t.len() + EMPTY_ENTRIES_KEPT_MIN));
        // Draining gives the memory back.
        let ids: Vec<DeliveryId> = t.iter().map(|(k, _)| *k).collect();
        for k in ids {
            t.remove(&k);
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.entries_len(), 0);
        assert!(t.entries.capacity() <= 4 * EMPTY_ENTRIES_KEPT_MIN);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Append,
        Remove(u64),
        Change(u64),
        Range(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0u64..300).prop_map(Op::Insert),
            6 => Just(Op::Append),
            5 => (0u64..300).prop_map(Op::Remove),
            2 => (0u64..300).prop_map(Op::Change),
            1 => (0u64..300, 0u64..300).prop_map(|(a, b)| Op::Range(a, b)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Against a `BTreeMap`, the structure it replaces.
        #[test]
        fn matches_a_btree_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut t = IdTable::default();
            let mut model = BTreeMap::new();
            let mut next = 0u64;
            for (step, op) in ops.into_iter().enumerate() {
                let step = step as u64;
                match op {
                    Op::Insert(n) => prop_assert_eq!(t.insert(id(n), step), model.insert(id(n), step)),
                    Op::Append => {
                        next = next.max(model.keys().next_back().map_or(0, |k: &DeliveryId| k.0 + 1));
                        prop_assert_eq!(t.insert(id(next), step), model.insert(id(next), step));
                        next += 1;
                    }
                    Op::Remove(n) => {
                        // Mostly ids that are held, so removals happen.
                        let key = model.keys().nth(n as usize % model.len().max(1)).copied().unwrap_or(id(n));
                        prop_assert_eq!(t.remove(&key), model.remove(&key));
                        prop_assert_eq!(t.remove(&id(n)), model.remove(&id(n)));
                    }
                    Op::Change(n) => {
                        if let Some(v) = t.get_mut(&id(n)) {
                            *v += 1000;
                        }
                        if let Some(v) = model.get_mut(&id(n)) {
                            *v += 1000;
                        }
                    }
                    Op::Range(a, b) => {
                        let (lo, hi) = (id(a.min(b)), id(a.max(b)));
                        let got: Vec<_> = t.range(lo..hi).collect();
                        let want: Vec<_> = model.range(lo..hi).collect();
                        prop_assert_eq!(got, want);
                        let got: Vec<_> = t.range((Bound::Excluded(lo), Bound::Included(hi))).rev().collect();
                        let want: Vec<_> = model.range((Bound::Excluded(lo), Bound::Included(hi))).rev().collect();
                        prop_assert_eq!(got, want);
                        for (_, v) in t.range_mut(lo..) {
                            *v += 1;
                        }
                        for (_, v) in model.range_mut(lo..) {
                            *v += 1;
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(t.iter().eq(model.iter()));
                prop_assert!(t.values_mut().map(|v| *v).eq(model.values().copied()));
                for k in [0, 5, 150, 299] {
                    prop_assert_eq!(t.get(&id(k)), model.get(&id(k)));
                    prop_assert_eq!(t.contains_key(&id(k)), model.contains_key(&id(k)));
                }
            }
        }
    }

    #[test]
    fn a_set_adds_finds_and_removes_in_order() {
        let mut s = IdSet::default();
        assert!(s.is_empty());
        for n in [1, 2, 3, 7, 9] {
            assert!(s.insert(id(n)));
        }
        assert!(!s.insert(id(3)));
        assert!(s.insert(id(5)));
        assert_eq!(s.len(), 6);
        assert!(s.remove(&id(3)));
        assert!(!s.remove(&id(3)));
        assert!(!s.remove(&id(4)));
        assert!(!s.contains(&id(3)));
        assert!(s.contains(&id(5)));
        assert_eq!(s.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 2, 5, 7, 9]);
        assert_eq!(s.range_from(id(6)).map(|k| k.0).collect::<Vec<_>>(), [7, 9]);
        assert!(s.insert(id(3)));
        assert_eq!(s.range_from(id(3)).next(), Some(id(3)));
        for n in [1, 2, 3, 5, 7, 9] {
            assert!(s.remove(&id(n)));
        }
        assert!(s.is_empty());
        assert_eq!(s.entries.len(), 0);
    }

    #[test]
    fn a_set_keeps_removed_entries_bounded() {
        let mut s = IdSet::default();
        s.insert(id(0));
        for n in 1..300_000u64 {
            s.insert(id(n));
            if n >= 50 {
                s.remove(&id(n - 49));
            }
            assert!(s.entries.len() <= 3 * s.len() / 2 + SET_EMPTY_ENTRIES_KEPT_MIN + 1);
        }
        assert_eq!(s.len(), 50);
        assert!(s.entries.capacity() <= 4 * (s.len() + SET_EMPTY_ENTRIES_KEPT_MIN));
    }

    #[test]
    fn a_set_that_shrinks_to_a_few_ids_gives_its_memory_back() {
        let mut s = IdSet::default();
        for n in 1..=1000u64 {
            s.insert(id(n));
        }
        // Removed from the middle (marks) and from the front, as deliveries end in any
        // order, down to three.
        for n in (2..1000u64)
            .filter(|n| n % 7 != 0)
            .chain((7..1000).step_by(7))
        {
            s.remove(&id(n));
        }
        assert_eq!(s.len(), 2);
        assert!(
            s.entries.len() <= 2 + SET_EMPTY_ENTRIES_KEPT_MIN + 1,
            "{}",
            s.entries.len()
        );
        assert!(
            s.entries.capacity() <= 4 * (s.len() + SET_EMPTY_ENTRIES_KEPT_MIN),
            "{}",
            s.entries.capacity()
        );
        assert!(s.contains(&id(1)) && s.contains(&id(1000)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Against a `BTreeSet`, the structure it replaces.
        #[test]
        fn a_set_matches_a_btree_set(ops in proptest::collection::vec(op(), 1..400)) {
            let mut s = IdSet::default();
            let mut model = std::collections::BTreeSet::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Insert(n) => prop_assert_eq!(s.insert(id(n)), model.insert(id(n))),
                    Op::Append => {
                        next = next.max(model.iter().next_back().map_or(0, |k: &DeliveryId| k.0 + 1));
                        prop_assert_eq!(s.insert(id(next)), model.insert(id(next)));
                        next += 1;
                    }
                    Op::Remove(n) => {
                        let key = model.iter().nth(n as usize % model.len().max(1)).copied().unwrap_or(id(n));
                        prop_assert_eq!(s.remove(&key), model.remove(&key));
                        prop_assert_eq!(s.remove(&id(n)), model.remove(&id(n)));
                    }
                    Op::Change(n) => prop_assert_eq!(s.contains(&id(n)), model.contains(&id(n))),
                    Op::Range(a, _) => {
                        prop_assert!(s.range_from(id(a)).eq(model.range(id(a)..).copied()));
                    }
                }
                prop_assert_eq!(s.len(), model.len());
                prop_assert_eq!(s.is_empty(), model.is_empty());
                prop_assert!(s.iter().eq(model.iter().copied()));
            }
        }
    }
}
