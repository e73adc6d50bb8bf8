//! Signing: the admitted attempts of one tick, signed in a batch and turned into
//! `Send` commands.

use super::*;

/// The content type of every webhook request: the body is the JSON envelope.
const CONTENT_TYPE_JSON: &str = "application/json";

/// The default fields' names, as sent.
const CONTENT_TYPE: &str = "content-type";
const USER_AGENT_NAME: &str = "user-agent";

/// An attempt admitted this tick, with everything its request needs.
pub(super) struct Plan {
    pub(super) delivery: DeliveryId,
    pub(super) attempt: u32,
    pub(super) tenant: TenantId,
    pub(super) webhook: WebhookId,
    pub(super) event_id: EventId,
    pub(super) signer: Signer,
    pub(super) url: Arc<Url>,
    pub(super) url_text: Arc<str>,
    pub(super) body: EventBody,
    pub(super) custom_headers: Vec<(String, String)>,
    pub(super) connect_timeout_ms: u64,
    pub(super) request_timeout_ms: u64,
}

/// Which body a plan sends: a held one by its allocation, a stored one by its position.
#[derive(PartialEq, Eq, Hash)]
enum BodyKey {
    Held(*const Arc<[u8]>),
    Stored(BodyPos),
}

impl Dispatcher {
    /// Signs the admitted attempts in one batch (their timestamp `signed_at_ms`, the
    /// wall clock as the driver gave it: receivers compare it with their own clock, so
    /// it must not be the dispatcher's clock, which never goes back and would stay ahead
    /// of the wall clock for as long as a clock stepped back had run fast) and queues a
    /// `Send` command for each, in admission order.
    /// Leaves `plans` empty.
    pub(super) fn sign_and_send(
        &mut self,
        signed_at_ms: u64,
        plans: &mut Vec<Plan>,
        store: &dyn BodyStore,
    ) {
        if plans.is_empty() {
            return;
        }
        // A stored body is read from the journal once per tick and shared by the
        // attempts of the tick that send it (plans come webhook by webhook, so one
        // event's attempts need not be next to each other).
        // Sized for every plan at once: grown from empty it rehashed every key it held
        // several times per tick.
        let mut read: FastHashMap<BodyKey, Bytes> =
            FastHashMap::with_capacity_and_hasher(plans.len(), Default::default());
        let bodies: Vec<Bytes> = plans
            .iter()
            .map(|p| {
                let key = match &p.body {
                    EventBody::Held(bytes) => BodyKey::Held(Arc::as_ptr(bytes)),
                    EventBody::Stored(at) => BodyKey::Stored(at.pos()),
                };
                read.entry(key)
                    .or_insert_with(|| p.body.shared(store))
                    .clone()
            })
            .collect();
        let timestamp_s = i64::try_from(signed_at_ms / 1000).unwrap_or(i64::MAX);
        if self.signed.len() < plans.len() {
            self.signed.resize_with(plans.len(), SignedHeaders::new);
        }
        {
            let jobs: Vec<(&Signer, Message<'_>)> = plans
                .iter()
                .zip(&bodies)
                .map(|(p, body)| {
                    (
                        &p.signer,
                        Message {
                            id: p.event_id.as_str(),
                            timestamp_s,
                            url: &p.url_text,
                            body,
                        },
                    )
                })
                .collect();
            self.batch_signer
                .sign_batch(&jobs, &mut self.signed[..plans.len()]);
        }
        for (index, (plan, body)) in plans.drain(..).zip(bodies).enumerate() {
            let signed = &self.signed[index];
            let text_bytes = CONTENT_TYPE.len()
                + CONTENT_TYPE_JSON.len()
                + USER_AGENT_NAME.len()
                + USER_AGENT.len()
                + signed.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()
                + plan
                    .custom_headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>();
            let mut headers = HeaderFields::with_capacity(
                2 + signed.len() + plan.custom_headers.len(),
                text_bytes,
            );
            headers.push_static(CONTENT_TYPE, CONTENT_TYPE_JSON);
            headers.push_static(USER_AGENT_NAME, USER_AGENT);
            for (name, value) in signed.iter() {
                headers.push(name, value);
            }
            for (name, value) in &plan.custom_headers {
                headers.push(name, value);
            }
            self.commands.push_back(Command::Send(SendRequest {
                delivery: plan.delivery,
                attempt: plan.attempt,
                tenant: plan.tenant,
                webhook: plan.webhook,
                event_id: plan.event_id,
                url: plan.url,
                headers,
                body,
                connect_timeout_ms: plan.connect_timeout_ms,
                request_timeout_ms: plan.request_timeout_ms,
            }));
        }
    }
}
