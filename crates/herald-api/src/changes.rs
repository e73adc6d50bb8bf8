//! One change at a time per webhook. `PATCH` and secret rotation read a webhook's whole
//! configuration, change a copy and write the copy back; two at once on the same
//! webhook each wrote back what the other had not seen: a rotation's new secret undone
//! by a concurrent description change, a disable undone by a concurrent edit. Changes
//! of one webhook through this server take turns; different webhooks never wait for
//! each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald::{TenantId, WebhookId};

type Key = (TenantId, WebhookId);

/// The webhooks being changed, each with the lock its changes take turns on. An entry
/// lives only while a change holds or waits for it, so the map holds at most one
/// entry per change under way.
#[derive(Debug, Default)]
pub(crate) struct WebhookChanges {
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// A change's turn on one webhook; the next change's begins when it is dropped.
pub(crate) struct ChangeTurn<'a> {
    changes: &'a WebhookChanges,
    key: Key,
    lock: Arc<tokio::sync::Mutex<()>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WebhookChanges {
    /// Waits for `tenant`'s webhook `id` to be free of other changes.
    pub(crate) async fn turn(&self, tenant: &TenantId, id: &WebhookId) -> ChangeTurn<'_> {
        let key = (tenant.clone(), id.clone());
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let turn = Arc::clone(&lock).lock_owned().await;
        ChangeTurn {
            changes: self,
            key,
            lock,
            turn: Some(turn),
        }
    }

    /// Webhooks with a change under way or waiting (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for ChangeTurn<'_> {
    fn drop(&mut self) {
        drop(self.turn.take());
        let mut locks = self.changes.locks.lock().unwrap_or_else(|p| p.into_inner());
        // The map's and this turn's: nobody else waits (a waiter holds a clone, and
        // takes one only under the map's lock, held here).
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, w: &str) -> (TenantId, WebhookId) {
        (TenantId::parse(t).unwrap(), WebhookId::parse(w).unwrap())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn changes_of_one_webhook_take_turns_and_leave_nothing_behind() {
        let changes = Arc::new(WebhookChanges::default());
        let (tenant, id) = key("acme", "wh_1");
        let first = changes.turn(&tenant, &id).await;
        // Another webhook's change does not wait.
        let (_, other) = key("acme", "wh_2");
        drop(changes.turn(&tenant, &other).await);
        let waiting = tokio::spawn({
            let changes = Arc::clone(&changes);
            let (tenant, id) = (tenant.clone(), id.clone());
            async move {
                let _turn = changes.turn(&tenant, &id).await;
            }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the second change waits for the first"
        );
        drop(first);
        waiting.await.unwrap();
        assert_eq!(changes.len(), 0, "no entry outlives its changes");
    }
}
