//! The held deliveries, and the copy-on-write that lets a checkpoint be written a part
//! at a time while the dispatcher goes on (see [`Dispatcher::begin_checkpoint`]).
//!
//! While a checkpoint is being built, the deliveries it has yet to write keep the state
//! they had when it began: the first change to one of them (or its removal) saves a
//! copy of it first, and the checkpoint writes the copy. Only deliveries that exist
//! when it begins are covered (ids below its bound); later ones are replayed from the
//! records after it. Deliveries already written, and those the run leaves alone, cost
//! nothing.

use std::collections::BTreeMap;
use std::ops::{Bound, Deref};

use super::table::IdTable;
use super::{Delivery, DeliveryId};

/// Every held delivery by id, read as the table it wraps; changes go through the methods
/// below, which keep a checkpoint being built consistent.
#[derive(Default)]
pub(super) struct Deliveries {
    /// Boxed: the table moves its entries (appending, compacting), and 16-byte entries
    /// move cheaply.
    map: IdTable<Box<Delivery>>,
    frozen: Option<Frozen>,
}

/// The deliveries a checkpoint being built has yet to write: ids after `after` and
/// below `upper`, as they were when it began.
struct Frozen {
    /// Deliveries created after the checkpoint began have ids from here on.
    upper: DeliveryId,
    /// The last delivery the checkpoint wrote.
    after: Option<DeliveryId>,
    /// Copies of deliveries in the window, taken before their first change or removal.
    saved: BTreeMap<DeliveryId, Box<Delivery>>,
}

impl Frozen {
    fn covers(&self, id: DeliveryId) -> bool {
        id < self.upper && self.after.is_none_or(|after| id > after)
    }
}

impl Deref for Deliveries {
    type Target = IdTable<Box<Delivery>>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Deliveries {
    /// Saves delivery `id` as it is now, if a checkpoint being built has yet to write it
    /// and it was not saved already.
    fn save(&mut self, id: DeliveryId) {
        let Some(frozen) = self.frozen.as_mut() else {
            return;
        };
        if !frozen.covers(id) || frozen.saved.contains_key(&id) {
            return;
        }
        if let Some(d) = self.map.get(&id) {
            frozen.saved.insert(id, d.clone());
        }
    }

    /// Delivery `id`, to change.
    pub(super) fn get_mut(&mut self, id: &DeliveryId) -> Option<&mut Box<Delivery>> {
        self.save(*id);
        self.map.get_mut(id)
    }

    /// Removes delivery `id` if `pred` holds for it (one search of the table).
    pub(super) fn remove_if(
        &mut self,
        id: &DeliveryId,
        pred: impl FnOnce(&Delivery) -> bool,
    ) -> Option<Box<Delivery>> {
        let removed = self.map.remove_if(id, |d| pred(d))?;
        if let Some(frozen) = self.frozen.as_mut() {
            if frozen.covers(*id) && !frozen.saved.contains_key(id) {
                frozen.saved.insert(*id, removed.clone());
            }
        }
        Some(removed)
    }

    /// Adds a delivery. While a checkpoint is being built only new ids (at or past its
    /// bound) are added: ids are handed out in order and never reused.
    pub(super) fn insert(&mut self, id: DeliveryId, delivery: Box<Delivery>) {
        if let Some(frozen) = &self.frozen {
            assert!(
                id >= frozen.upper,
                "bug: delivery {id} added below the bound of the checkpoint being built"
            );
        }
        self.map.insert(id, delivery);
    }

    /// Deliveries from `from` on, to change. Not while a checkpoint is being built
    /// (used by replay and by the end of a checkpoint, which come before or after).
    pub(super) fn range_mut_from(
        &mut self,
        from: DeliveryId,
    ) -> impl DoubleEndedIterator<Item = (&DeliveryId, &mut Box<Delivery>)> {
        self.assert_not_frozen();
        self.map.range_mut(from..)
    }

    /// Deliveries before `to`, to change; see [`Deliveries::range_mut_from`].
    pub(super) fn range_mut_to(
        &mut self,
        to: DeliveryId,
    ) -> impl DoubleEndedIterator<Item = (&DeliveryId, &mut Box<Delivery>)> {
        self.assert_not_frozen();
        self.map.range_mut(..to)
    }

    /// Every delivery, to change; see [`Deliveries::range_mut_from`].
    pub(super) fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Box<Delivery>> {
        self.assert_not_frozen();
        self.map.values_mut()
    }

    fn assert_not_frozen(&self) {
        assert!(
            self.frozen.is_none(),
            "bug: deliveries changed in bulk while a checkpoint is being built"
        );
    }

    /// A checkpoint begins: deliveries below `upper` keep their state for it until it
    /// writes them.
    pub(super) fn freeze(&mut self, upper: DeliveryId) {
        assert!(
            self.frozen.is_none(),
            "bug: a checkpoint began while another is being built"
        );
        self.frozen = Some(Frozen {
            upper,
            after: None,
            saved: BTreeMap::new(),
        });
    }

    /// The checkpoint being built wrote every delivery up to `after`: their copies go.
    pub(super) fn written_through(&mut self, after: DeliveryId) {
        if let Some(frozen) = self.frozen.as_mut() {
            frozen.after = Some(after);
            frozen.saved = frozen
                .saved
                .split_off(&DeliveryId(after.0.saturating_add(1)));
        }
    }

    /// The checkpoint being built ended (complete or abandoned).
    pub(super) fn thaw(&mut self) {
        self.frozen = None;
    }

    /// Whether a checkpoint is being built.
    pub(super) fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// Copies saved for the checkpoint being built (for its figures).
    pub(super) fn saved_len(&self) -> usize {
        self.frozen.as_ref().map_or(0, |f| f.saved.len())
    }

    /// The deliveries after `after` and below `upper` as a checkpoint writes them, in id
    /// order: as they were when it began if one is being built (saved copies in place
    /// of changed ones, removed ones included), else as they are.
    pub(super) fn snapshot_after(
        &self,
        after: Option<DeliveryId>,
        upper: DeliveryId,
    ) -> impl Iterator<Item = (DeliveryId, &Delivery)> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let range = (lower, Bound::Excluded(upper));
        let live = self.map.range(range).peekable();
        let saved = self
            .frozen
            .as_ref()
            .map(|f| f.saved.range(range))
            .into_iter()
            .flatten()
            .peekable();
        Merge { live, saved }
    }
}

/// Two id-ordered runs of deliveries merged, the second's entry winning on equal ids.
struct Merge<L: Iterator, S: Iterator> {
    live: std::iter::Peekable<L>,
    saved: std::iter::Peekable<S>,
}

impl<'a, L, S> Iterator for Merge<L, S>
where
    L: Iterator<Item = (&'a DeliveryId, &'a Box<Delivery>)>,
    S: Iterator<Item = (&'a DeliveryId, &'a Box<Delivery>)>,
{
    type Item = (DeliveryId, &'a Delivery);

    fn next(&mut self) -> Option<Self::Item> {
        let next_live = self.live.peek().map(|(id, _)| **id);
        let next_saved = self.saved.peek().map(|(id, _)| **id);
        let (id, d) = match (next_live, next_saved) {
            (None, None) => return None,
            (Some(_), None) => self.live.next()?,
            (None, Some(_)) => self.saved.next()?,
            (Some(l), Some(s)) if l < s => self.live.next()?,
            (Some(l), Some(s)) => {
                if l == s {
                    self.live.next();
                }
                self.saved.next()?
            }
        };
        Some((*id, &**d))
    }
}
