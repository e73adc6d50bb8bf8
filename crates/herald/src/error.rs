//! Errors of the embedding API. Each says whose fault it is ([`Fault`]) and, when a
//! hand-off to the engine failed, gives the item back ([`Unsent`]).

use std::fmt;
use std::sync::Arc;

use crate::{DeliveryId, Event, TenantId, WebhookId, WebhookSpec};

/// Whose fault an [`Error`] is, for callers that decide generically (retry, alert, 4xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The caller passed something invalid or unknown; retrying the same call fails again.
    Caller,
    /// The engine is at capacity right now; retry later or use a waiting form.
    Capacity,
    /// The engine is stopping or stopped; the call will never succeed on this handle.
    Shutdown,
    /// The disk (journal) failed; an operator must look.
    Storage,
    /// The host refused what the engine needs to run (a thread, locked memory for
    /// io_uring, a socket); retrying does not help until an operator changes the host's
    /// limits or configuration.
    Environment,
    /// A defect in Herald; please report it with the message.
    Bug,
}

/// An item that was not handed to the engine, given back to the caller.
#[derive(Debug)]
pub enum Unsent {
    /// An event from `publish`/`try_publish`/`publish_async`.
    Event {
        /// Its tenant.
        tenant: TenantId,
        /// The event, unchanged.
        event: Box<Event>,
    },
    /// The events of a `publish_batch`/`publish_batch_async`, unchanged apart from their
    /// ids being filled in.
    Events {
        /// Their tenant.
        tenant: TenantId,
        /// The events, in order.
        events: Vec<Event>,
    },
    /// A webhook spec from `create_webhook`/`update_webhook`.
    Webhook {
        /// Its tenant.
        tenant: TenantId,
        /// The spec, unchanged.
        spec: Box<WebhookSpec>,
    },
    /// A request that carried nothing worth giving back (queries, deletes, retries).
    Request,
}

/// An operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Invalid input: a bad webhook spec, an event that is not JSON, a bad id, a url the
    /// egress guard refuses. The caller's fault.
    Invalid {
        /// What was wrong.
        message: String,
        /// The input field at fault when one is (`url`, `filters`, `headers`, `secrets`,
        /// `limits`, `data`, `api_version`, `event_type`, `idempotency_key`, …), for
        /// callers that point at it (e.g. a REST API's error body).
        field: Option<String>,
        /// The underlying error (a core validation error), for [`std::error::Error::source`].
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The request conflicts with the current state: an idempotency key reused for a
    /// different event, a delivery already in flight or already successful, a disabled
    /// webhook, the tenant's most webhooks reached. The caller's fault; retrying the same
    /// call fails again until the state changes.
    Conflict {
        /// What conflicts, and what to do instead.
        message: String,
    },
    /// No such webhook for this tenant. The caller's fault.
    UnknownWebhook {
        /// The tenant asked about.
        tenant: TenantId,
        /// The webhook that does not exist.
        webhook: WebhookId,
    },
    /// No such delivery for this tenant. The caller's fault.
    UnknownDelivery {
        /// The tenant asked about.
        tenant: TenantId,
        /// The delivery that does not exist.
        delivery: DeliveryId,
    },
    /// The tenant's shard cannot take the item now: its intake queue is full (`try_*`
    /// forms only), or it holds the most pending deliveries allowed (any form). The item
    /// is given back: for a publish or a test send of a caller's event, the event
    /// ([`Error::into_event`]; in a batch, each refused event in its own result).
    Backpressure {
        /// The shard that is full.
        shard: usize,
        /// What was not handed over.
        unsent: Unsent,
    },
    /// The tenant holds the most pending deliveries allowed in its shard
    /// ([`crate::DispatcherConfig::pending_deliveries_per_tenant_max`]): its receivers
    /// are failing or slow. Retry once they catch up (or fix, disable or delete the
    /// webhooks that fail); the shard's other tenants are not held back. The item is
    /// given back as with [`Error::Backpressure`].
    TenantFull {
        /// The tenant.
        tenant: TenantId,
        /// Its pending deliveries in its shard.
        pending: usize,
        /// The limit.
        max: usize,
        /// What was not handed over.
        unsent: Unsent,
    },
    /// The engine is shutting down or stopped. The item is given back when it was never
    /// handed over; `Unsent::Request` when the shard stopped before answering.
    ShuttingDown {
        /// What was not handed over.
        unsent: Unsent,
    },
    /// The shard's journal could not take the operation, which was not carried out. A
    /// shard whose disk is full refuses changes (queries still work) and resumes by
    /// itself once the journal can write again; a failed sync stops the shard.
    Storage {
        /// The shard.
        shard: usize,
        /// What failed.
        message: String,
        /// The journal's error (a `herald_journal::JournalError`, or a replay error whose
        /// chain reaches it), for [`std::error::Error::source`]; shared, as every caller
        /// waiting on the shard gets the same one.
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The host refused a shard something it needs to run (its wake-up socket could not
    /// be registered with the executor), so it stopped. Nothing on disk is wrong; an
    /// operator must change the host's limits or configuration.
    Environment {
        /// The shard.
        shard: usize,
        /// What the host refused.
        message: String,
    },
    /// A defect in Herald (an invariant did not hold).
    Bug {
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Whose fault this is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Invalid { .. }
            | Error::Conflict { .. }
            | Error::UnknownWebhook { .. }
            | Error::UnknownDelivery { .. } => Fault::Caller,
            Error::Backpressure { .. } | Error::TenantFull { .. } => Fault::Capacity,
            Error::ShuttingDown { .. } => Fault::Shutdown,
            Error::Storage { .. } => Fault::Storage,
            Error::Environment { .. } => Fault::Environment,
            Error::Bug { .. } => Fault::Bug,
        }
    }

    /// The item that was not handed over, if this error carries one.
    pub fn into_unsent(self) -> Option<Unsent> {
        match self {
            Error::Backpressure { unsent, .. }
            | Error::TenantFull { unsent, .. }
            | Error::ShuttingDown { unsent } => Some(unsent),
            _ => None,
        }
    }

    /// The event that was not handed over, if this error carries one.
    pub fn into_event(self) -> Option<(TenantId, Event)> {
        match self.into_unsent() {
            Some(Unsent::Event { tenant, event }) => Some((tenant, *event)),
            _ => None,
        }
    }

    /// The field at fault of an [`Error::Invalid`], if it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid {
            message: message.into(),
            field: None,
            source: None,
        }
    }

    pub(crate) fn invalid_field(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            message: message.into(),
            field: Some(field.to_string()),
            source: None,
        }
    }

    /// An [`Error::Invalid`] wrapping a validation error (its text becomes the message).
    pub(crate) fn invalid_because(
        field: Option<&str>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Invalid {
            message: error.to_string(),
            field: field.map(str::to_string),
            source: Some(Box::new(error)),
        }
    }
}

/// Message of a refused `http://` url when https is required.
pub(crate) const PLAIN_HTTP_REFUSED: &str =
    "plain http is not allowed: this engine requires https (require_https); use an https:// url";

/// The field a webhook spec error is about.
pub(crate) fn spec_field(error: &herald_core::SpecError) -> &'static str {
    use herald_core::SpecError;
    match error {
        SpecError::NoFilter | SpecError::TooManyFilters { .. } => "filters",
        SpecError::DescriptionTooLong { .. } => "description",
        SpecError::TooManyHeaders { .. }
        | SpecError::HeaderName { .. }
        | SpecError::HeaderReserved { .. }
        | SpecError::HeaderValue { .. } => "headers",
        SpecError::Limit { .. } => "limits",
        SpecError::NoLiveSecret | SpecError::Secret(_) => "secrets",
    }
}

/// The field an envelope error is about.
pub(crate) fn envelope_field(error: &herald_core::EnvelopeError) -> &'static str {
    use herald_core::EnvelopeError;
    match error {
        EnvelopeError::Data { .. } | EnvelopeError::TooLarge { .. } => "data",
        EnvelopeError::ApiVersion { .. } => "api_version",
    }
}

/// A URL refused by the egress guard, as the caller's error on field `url`, naming the
/// address, its range and the setting that would permit it.
pub(crate) fn url_refused(refusal: herald_rt::UrlRefusal) -> Error {
    use herald_rt::{AddressClass, UrlRefusal};
    let message = match &refusal {
        UrlRefusal::PlainHttp => PLAIN_HTTP_REFUSED.to_string(),
        UrlRefusal::Address {
            host,
            literal,
            refusal,
        } => {
            let article = match refusal.class {
                AddressClass::Unspecified => "an",
                _ => "a",
            };
            let what = format!("{article} {} address", refusal.class);
            let allow = "allow it with [egress] allow_cidrs (Builder::allow_cidr)";
            if *literal {
                format!("{} is {what}; {allow}", refusal.ip)
            } else {
                format!("{host} resolves to {}, {what}; {allow}", refusal.ip)
            }
        }
        UrlRefusal::Lookup { .. } | UrlRefusal::LookupTimeout { .. } => refusal.to_string(),
    };
    Error::Invalid {
        message,
        field: Some("url".to_string()),
        source: Some(Box::new(refusal)),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid {
                message,
                field: Some(field),
                ..
            } => write!(f, "invalid {field}: {message}"),
            Error::Invalid { message, .. } => write!(f, "invalid input: {message}"),
            Error::Conflict { message } => write!(f, "conflict: {message}"),
            Error::UnknownWebhook { tenant, webhook } => {
                write!(f, "tenant {tenant} has no webhook {webhook}")
            }
            Error::UnknownDelivery { tenant, delivery } => {
                write!(f, "tenant {tenant} has no delivery {delivery}")
            }
            Error::Backpressure { shard, .. } => {
                write!(f, "shard {shard} is at capacity; the item was not accepted")
            }
            Error::TenantFull {
                tenant,
                pending,
                max,
                ..
            } => write!(
                f,
                "tenant {tenant} has {pending} pending deliveries (at most {max}); its receivers \
                 must catch up before more are accepted"
            ),
            Error::ShuttingDown { .. } => f.write_str("the engine is shutting down"),
            Error::Storage { shard, message, .. } => {
                write!(f, "shard {shard}: journal failed: {message}")
            }
            Error::Environment { shard, message } => {
                write!(f, "shard {shard}: stopped by its host: {message}")
            }
            Error::Bug { message } => write!(f, "internal error (a bug in herald): {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Invalid {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            Error::Storage {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl Error {
    /// The [`Error::Storage`] for a shard's journal failure, keeping the journal's error
    /// as the source.
    pub(crate) fn storage(shard: usize, error: herald_rt::shard::StorageError) -> Error {
        Error::Storage {
            shard,
            message: error.message().to_string(),
            source: error.cause(),
        }
    }
}

/// The engine could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The builder's settings are unusable (the caller's fault), e.g. a bad CIDR, a
    /// missing CA file, zero shards.
    Config {
        /// What was wrong, naming the setting.
        message: String,
    },
    /// A shard's journal could not be opened or replayed.
    Storage {
        /// The shard.
        shard: usize,
        /// What failed, with the path.
        message: String,
        /// The journal's (or the file system's, or replay's) error, for
        /// [`std::error::Error::source`].
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A shard thread or its executor could not be created (threads, memlock, io_uring).
    Runtime {
        /// The shard.
        shard: usize,
        /// What failed.
        message: String,
        /// The OS's (or the journal's) error, when there is one, for
        /// [`std::error::Error::source`].
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

impl StartError {
    /// Whose fault this is.
    pub fn fault(&self) -> Fault {
        match self {
            StartError::Config { .. } => Fault::Caller,
            StartError::Storage { .. } => Fault::Storage,
            StartError::Runtime { .. } => Fault::Environment,
        }
    }

    /// For [`StartError::Storage`]: whether the journal's contents are at fault (a
    /// damaged or incomplete segment, a record replay cannot apply), which
    /// `herald journal check` names and `--repair` can mend. Otherwise the file system
    /// refused something (permissions, a file where a directory belongs, no space) or
    /// another process holds the journal, and the data directory is what to look at.
    pub fn journal_damaged(&self) -> bool {
        let StartError::Storage { source, .. } = self else {
            return false;
        };
        let mut next: Option<&(dyn std::error::Error + 'static)> = match source {
            Some(source) => Some(source.as_ref()),
            None => None,
        };
        while let Some(error) = next {
            if error.downcast_ref::<std::io::Error>().is_some() {
                return false;
            }
            if let Some(journal) = error.downcast_ref::<herald_journal::JournalError>() {
                use herald_journal::JournalError as J;
                if matches!(journal, J::Io { .. } | J::Locked { .. } | J::Spawn { .. }) {
                    return false;
                }
            }
            next = error.source();
        }
        true
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config { message } => write!(f, "invalid configuration: {message}"),
            StartError::Storage { shard, message, .. } => {
                write!(f, "shard {shard}: journal could not be opened: {message}")
            }
            StartError::Runtime { shard, message, .. } => {
                write!(f, "shard {shard}: could not start: {message}")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Storage {
                source: Some(source),
                ..
            }
            | StartError::Runtime {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_name_who_must_act() {
        let config = StartError::Config {
            message: "shards must be 1..=256".into(),
        };
        let runtime = StartError::Runtime {
            shard: 0,
            message: "io_uring: locked memory limit".into(),
            source: None,
        };
        assert_eq!(config.fault(), Fault::Caller);
        // The host's limits, not a passing lack of capacity: retrying does not help.
        assert_eq!(runtime.fault(), Fault::Environment);
        // A shard stopped by its host (its wake-up eventfd) is not a storage failure.
        let stopped = Error::Environment {
            shard: 1,
            message: "binding the wake eventfd: out of memory".into(),
        };
        assert_eq!(stopped.fault(), Fault::Environment);
    }

    /// Damage is the journal's contents; a refusal of the file system, or a lock held
    /// elsewhere, is not (its fix is not `herald journal check`).
    #[test]
    fn a_storage_start_failure_tells_damage_from_the_file_system() {
        let storage = |source: Arc<dyn std::error::Error + Send + Sync>| StartError::Storage {
            shard: 0,
            message: source.to_string(),
            source: Some(source),
        };
        let damaged = storage(Arc::new(herald_journal::JournalError::SegmentGap {
            segment: "/data/shard-0/00000000000000000009.seg".into(),
            expected: 5,
            found: 9,
        }));
        assert!(damaged.journal_damaged());
        let refused = storage(Arc::new(herald_journal::JournalError::Io {
            op: "open",
            path: "/data/shard-0".into(),
            source: std::io::Error::from_raw_os_error(20),
        }));
        assert!(!refused.journal_damaged());
        let io = storage(Arc::new(std::io::Error::from_raw_os_error(13)));
        assert!(!io.journal_damaged());
        let locked = storage(Arc::new(herald_journal::JournalError::Locked {
            dir: "/data/shard-0".into(),
        }));
        assert!(!locked.journal_damaged());
        let config = StartError::Config {
            message: "shards must be 1..=256".into(),
        };
        assert!(!config.journal_damaged());
    }

    #[test]
    fn a_runtime_start_failure_keeps_the_os_error_as_its_source() {
        use std::error::Error as _;
        let refused = StartError::Runtime {
            shard: 2,
            message: "wake eventfd: too many open files".into(),
            source: Some(Arc::new(std::io::Error::from_raw_os_error(24))),
        };
        let source = refused.source().expect("the OS error is the source");
        let os = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(os.raw_os_error(), Some(24));
        assert_eq!(refused.fault(), Fault::Environment);
    }
}
