//! Scenario tests of the dispatcher: a small driver that records every command.

use super::*;
use crate::health::Breaker;
use crate::matcher::EventFilter;
use crate::retry::TransportError;
use crate::webhook::{EndpointLimits, RateLimit, SecretSpec};
use herald_http::RetryAfter;
use herald_sign::{Scheme, Verifier};

const T0: u64 = 1_700_000_000_000;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY";
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}
fn wh(s: &str) -> WebhookId {
    WebhookId::parse(s).unwrap()
}
fn spec(filters: &[&str]) -> WebhookSpec {
    WebhookSpec::new(
        Url::parse("https://receiver.example/hook").unwrap(),
        filters
            .iter()
            .map(|f| EventFilter::parse(f).unwrap())
            .collect(),
        Scheme::Standard,
        SECRET.to_string(),
    )
}
/// A webhook of `filters` retried after each of `delays_ms`.
fn spec_retrying(filters: &[&str], delays_ms: Vec<u64>) -> WebhookSpec {
    let mut s = spec(filters);
    s.retry_schedule = Some(RetrySchedule::new(delays_ms).unwrap());
    s
}

/// The default policy with the breaker's threshold and the auto-disable period given.
fn health_config(breaker_failures: u32, disable_after_failing_ms: u64) -> DispatcherConfig {
    DispatcherConfig {
        health: HealthPolicy {
            breaker_failures,
            disable_after_failing_ms,
            ..HealthPolicy::default()
        },
        ..DispatcherConfig::default()
    }
}

fn event(id: &str, event_type: &str) -> NewEvent {
    NewEvent {
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse(event_type).unwrap(),
        api_version: API_VERSION_DEFAULT.to_string(),
        created_at_ms: T0,
        location_id: None,
        data: br#"{"n":1}"#.to_vec(),
        idempotency: None,
    }
}
fn status(code: u16) -> AttemptResult {
    AttemptResult::Response {
        status: code,
        retry_after: None,
    }
}

/// A driver without a journal: every record is durable as soon as it is polled.
struct Driver {
    d: Dispatcher,
    now: u64,
    sent: Vec<SendRequest>,
    records: Vec<Record>,
    auto_durable: bool,
    /// Most ticks one [`Driver::step`] makes (it stops earlier once quiet).
    ticks_per_step: usize,
}

impl Driver {
    fn new(config: DispatcherConfig) -> Driver {
        Driver {
            d: Dispatcher::new(config, T0),
            now: T0,
            sent: Vec::new(),
            records: Vec::new(),
            auto_durable: true,
            ticks_per_step: usize::MAX,
        }
    }

    /// Ticks and polls until quiet (or `ticks_per_step` ticks); returns the sends of
    /// this step.
    fn step(&mut self) -> Vec<SendRequest> {
        let mut out = Vec::new();
        let mut ticks = 0;
        loop {
            self.d.tick(self.now);
            ticks += 1;
            let mut any = false;
            while let Some(cmd) = self.d.pop_command() {
                any = true;
                match cmd {
                    Command::Append { id, record } => {
                        // Every record must survive encoding.
                        let (kind, version, payload) = record.encode().unwrap();
                        assert_eq!(Record::decode(kind, version, &payload).unwrap(), record);
                        self.records.push(record);
                        if self.auto_durable {
                            self.d.records_durable(id);
                        }
                    }
                    Command::Send(req) => {
                        self.sent.push(req.clone());
                        out.push(req);
                    }
                }
            }
            if ticks >= self.ticks_per_step
                || (!any && self.d.next_deadline_ms().is_none_or(|t| t > self.now))
            {
                return out;
            }
        }
    }

    fn advance_to(&mut self, t: u64) -> Vec<SendRequest> {
        self.now = self.now.max(t);
        self.step()
    }

    /// The next attempt of `req`'s delivery (of `tenant`), once its retry is due.
    fn next_attempt(&mut self, tenant: &TenantId, req: &SendRequest) -> SendRequest {
        let due = self
            .d
            .delivery(tenant, req.delivery)
            .and_then(|d| d.next_retry_at_ms)
            .unwrap_or_else(|| panic!("delivery {} has no retry due", req.delivery));
        self.advance_to(due).remove(0)
    }

    /// Answers attempt `attempt` of `delivery` (one in flight) with a 200.
    fn answer(&mut self, delivery: DeliveryId, attempt: u32) -> bool {
        self.d.attempt_finished(
            self.now,
            Outcome {
                delivery,
                attempt,
                result: status(200),
                latency_ms: 3,
                response_body: b"late".to_vec(),
                response_headers: ResponseHeaders::new(),
            },
        )
    }

    /// Answers `req` with `result` and steps: how long after the answer the delivery's
    /// next attempt is due, if one is.
    fn retried_after(
        &mut self,
        tenant: &TenantId,
        req: &SendRequest,
        result: AttemptResult,
    ) -> Option<u64> {
        let at = self.now;
        assert!(self.reply(req, result));
        self.step();
        let rec = self.d.delivery(tenant, req.delivery).unwrap();
        rec.next_retry_at_ms.map(|due| due - at)
    }

    fn reply(&mut self, req: &SendRequest, result: AttemptResult) -> bool {
        self.d.attempt_finished(
            self.now,
            Outcome {
                delivery: req.delivery,
                attempt: req.attempt,
                result,
                latency_ms: 7,
                response_body: b"ok".to_vec(),
                response_headers: ResponseHeaders::bounded([
                    ("Content-Type", "text/plain".to_string()),
                    (
                        "X-Request-Id",
                        format!("r{}-{}", req.delivery.0, req.attempt),
                    ),
                ]),
            },
        )
    }
}

/// `spec(filters)`, disabled by an operator at `at_ms`.
fn disabled_by_hand(filters: &[&str], at_ms: u64) -> WebhookSpec {
    let mut s = spec(filters);
    s.status = WebhookStatus::Disabled {
        reason: DisableReason::Manual,
        at_ms,
    };
    s
}

fn one_webhook(config: DispatcherConfig, s: WebhookSpec) -> Driver {
    let mut drv = Driver::new(config);
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), s)
        .unwrap();
    drv.step();
    drv
}

/// [`one_webhook`] for acme, and a webhook `w1` of every event for `other` too.
fn and_another_tenant(config: DispatcherConfig, s: WebhookSpec, other: &TenantId) -> Driver {
    let mut drv = one_webhook(config, s);
    drv.d
        .upsert_webhook(T0, other.clone(), wh("w1"), spec(&["*"]))
        .unwrap();
    drv.step();
    drv
}

#[test]
fn sends_signed_envelope_after_durability() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["order.*"]));
    drv.auto_durable = false;
    let accepted = drv
        .d
        .accept_event(T0, &tenant("acme"), event("evt_1", "order.created"))
        .unwrap();
    assert_eq!(accepted.deliveries, 1);
    assert!(drv.step().is_empty(), "nothing is sent before durability");
    assert_eq!(drv.d.stats().awaiting_durable, 1);
    drv.d.records_durable(accepted.append);
    let sent = drv.step();
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(req.attempt, 1);
    assert_eq!(req.connect_timeout_ms, 5_000);
    assert_eq!(req.request_timeout_ms, 30_000);
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["id"], "evt_1");
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["tenant_id"], "acme");
    assert_eq!(
        req.headers.iter().next().unwrap(),
        ("content-type", "application/json")
    );
    let headers: Vec<(&str, &str)> = req.headers.iter().collect();
    assert_eq!(headers.header("webhook-id"), Some("evt_1"));
    Verifier::new(Scheme::Standard, &[SECRET])
        .unwrap()
        .verify(
            &headers[..],
            "https://receiver.example/hook",
            &req.body,
            (T0 / 1000) as i64,
        )
        .unwrap();
    // Starting the attempt wrote nothing: its outcome will be its record.
    assert!(matches!(drv.records.last(), Some(Record::EventAccepted(_))));
}

use herald_sign::HeaderLookup;

/// Every scheme's requests verify with the receiver-side verifier.
#[test]
fn every_scheme_verifies() {
    let schemes = [
        Scheme::Standard,
        Scheme::Ed25519,
        Scheme::stripe(),
        Scheme::Stripe {
            header: "Crumb-Signature".into(),
        },
        Scheme::Olo,
    ];
    for scheme in schemes {
        let secret = herald_sign::generate_secret(&scheme, &[7; 32]);
        let key = match scheme {
            Scheme::Ed25519 => herald_sign::public_key(&secret).unwrap(),
            _ => secret.clone(),
        };
        let mut s = spec(&["*"]);
        s.scheme = scheme.clone();
        s.secrets[0].value = secret;
        let mut drv = one_webhook(DispatcherConfig::default(), s);
        drv.d
            .accept_event(T0, &tenant("acme"), event("evt_1", "a.b"))
            .unwrap();
        let req = drv.step().remove(0);
        let headers: Vec<(&str, &str)> = req.headers.iter().collect();
        Verifier::new(scheme.clone(), &[&key])
            .unwrap()
            .verify(
                &headers[..],
                &req.url.to_string(),
                &req.body,
                (T0 / 1000) as i64,
            )
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
    }
}

#[test]
fn no_live_secret_fails_deliveries() {
    let mut s = spec(&["*"]);
    s.secrets[0].expires_at_ms = Some(T0 + 1_000);
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    drv.now = T0 + 1_000;
    drv.d
        .accept_event(drv.now, &tenant("acme"), event("evt_1", "a.b"))
        .unwrap();
    assert!(drv.step().is_empty());
    let page = drv.d.deliveries(&DeliveryQuery::tenant(tenant("acme")));
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].status, DeliveryStatus::Failed);
    assert_eq!(page.items[0].error, Some(DeliveryError::NoLiveSecret));
}

#[test]
fn custom_headers_and_rotation() {
    let mut s = spec(&["*"]);
    s.headers.push(("x-team".into(), "blue".into()));
    s.secrets.push(SecretSpec {
        value: OLD_SECRET.into(),
        expires_at_ms: Some(T0 + 1_000),
    });
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    drv.d
        .accept_event(T0, &tenant("acme"), event("evt_1", "a.b"))
        .unwrap();
    let first = drv.step().remove(0);
    let sig = |req: &SendRequest| req.headers.get("webhook-signature").unwrap().to_owned();
    assert_eq!(sig(&first).split(' ').count(), 2, "both live secrets sign");
    assert_eq!(first.headers.iter().last().unwrap(), ("x-team", "blue"));
    drv.now = T0 + 1_000;
    drv.d
        .accept_event(drv.now, &tenant("acme"), event("evt_2", "a.b"))
        .unwrap();
    let second = drv.step().remove(0);
    assert_eq!(
        sig(&second).split(' ').count(),
        1,
        "the old secret's grace ended"
    );
    let headers: Vec<(&str, &str)> = second.headers.iter().collect();
    Verifier::new(Scheme::Standard, &[OLD_SECRET])
        .unwrap()
        .verify(&headers[..], "", &second.body, (drv.now / 1000) as i64)
        .unwrap_err();
}

/// Every outcome class, from the dispatcher's point of view.
#[test]
fn outcome_table() {
    use DeliveryStatus::*;
    let cases: Vec<(AttemptResult, DeliveryStatus, Option<u64>, bool)> = vec![
        // (result, status after, next retry delay, webhook still active)
        (status(200), Success, None, true),
        (status(204), Success, None, true),
        (status(301), Failed, None, true),
        (status(400), Failed, None, true),
        (status(404), Failed, None, true),
        (status(408), Pending, Some(MIN), true),
        (status(410), Failed, None, false),
        (status(429), Pending, Some(MIN), true),
        (status(500), Pending, Some(MIN), true),
        (status(503), Pending, Some(MIN), true),
        (
            AttemptResult::Transport(TransportError::ConnectTimeout),
            Pending,
            Some(MIN),
            true,
        ),
        (
            AttemptResult::Transport(TransportError::Tls),
            Pending,
            Some(MIN),
            true,
        ),
        (
            AttemptResult::Transport(TransportError::Protocol),
            Pending,
            Some(MIN),
            true,
        ),
        (
            AttemptResult::Transport(TransportError::EgressDenied),
            Failed,
            None,
            true,
        ),
        // The request could not be encoded: sending it again cannot help, and the
        // receiver did nothing wrong (its webhook stays active).
        (
            AttemptResult::Transport(TransportError::InvalidRequest),
            Failed,
            None,
            true,
        ),
        (
            AttemptResult::Response {
                status: 429,
                retry_after: Some(RetryAfter::DelaySeconds(600)),
            },
            Pending,
            Some(10 * MIN),
            true,
        ),
        (
            AttemptResult::Response {
                status: 503,
                retry_after: Some(RetryAfter::DelaySeconds(7 * 24 * 3600)),
            },
            Pending,
            Some(24 * HOUR),
            true,
        ),
    ];
    for (result, want_status, want_delay, want_active) in cases {
        let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
        drv.d
            .accept_event(T0, &tenant("acme"), event("evt_1", "a.b"))
            .unwrap();
        let req = drv.step().remove(0);
        assert!(drv.reply(&req, result.clone()));
        drv.step();
        let rec = drv.d.delivery(&tenant("acme"), req.delivery).unwrap();
        assert_eq!(rec.status, want_status, "{result:?}");
        assert_eq!(
            rec.next_retry_at_ms,
            want_delay.map(|d| T0 + d),
            "{result:?}"
        );
        assert_eq!(rec.response_body.as_ref(), b"ok");
        let active = drv
            .d
            .webhook(&tenant("acme"), &wh("w1"))
            .unwrap()
            .spec
            .status
            .is_active();
        assert_eq!(active, want_active, "{result:?}");
    }
}

#[test]
fn default_schedule_then_exhausted() {
    let config = DispatcherConfig {
        health: HealthPolicy {
            breaker_failures: 100,
            ..HealthPolicy::default()
        },
        ..DispatcherConfig::default()
    };
    let mut drv = one_webhook(config, spec(&["*"]));
    drv.d
        .accept_event(T0, &tenant("acme"), event("evt_1", "a.b"))
        .unwrap();
    let mut attempt_times = Vec::new();
    let mut req = drv.step().remove(0);
    loop {
        attempt_times.push(drv.now - T0);
        assert_eq!(req.attempt as usize, attempt_times.len());
        drv.reply(&req, status(500));
        drv.step();
        let rec = drv.d.delivery(&tenant("acme"), req.delivery).unwrap();
        match rec.next_retry_at_ms {
            Some(at) => {
                // Nothing is sent before it is due.
                assert!(drv.advance_to(at - 1).is_empty());
                req = drv.advance_to(at).remove(0);
            }
            None => {
                assert_eq!(rec.status, DeliveryStatus::Exhausted);
                assert_eq!(rec.error, Some(DeliveryError::Status(500)));
                break;
            }
        }
    }
    let (m, h) = (MIN, HOUR);
    assert_eq!(
        attempt_times,
        [
            0,
            m,
            6 * m,
            36 * m,
            36 * m + 2 * h,
            36 * m + 10 * h,
            36 * m + 34 * h
        ]
    );
}

#[test]
fn per_webhook_schedule_and_jitter_are_deterministic() {
    let run = |seed: u64| {
        let config = DispatcherConfig {
            jitter_percent: 50,
            jitter_seed: seed,
            ..DispatcherConfig::default()
        };
        let s = spec_retrying(&["*"], vec![1_000, 1_000]);
        let mut drv = one_webhook(config, s);
        drv.d
            .accept_event(T0, &tenant("acme"), event("evt_1", "a.b"))
            .unwrap();
        let req = drv.step().remove(0);
        drv.reply(&req, status(500));
        drv.d
            .delivery(&tenant("acme"), req.delivery)
            .unwrap()
            .next_retry_at_ms
            .unwrap()
            - T0
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert!((500..=1_500).contains(&a));
    let spread: BTreeSet<u64> = (0..16).map(run).collect();
    assert!(spread.len() > 1, "seeds change the jitter");
}

/// One webhook that takes at most `in_flight_max` attempts at once, and five events
/// for it accepted at `T0`.
fn capped_with_five_events(in_flight_max: u32) -> Driver {
    let mut s = spec(&["*"]);
    s.limits = EndpointLimits {
        in_flight_max,
        ..EndpointLimits::default()
    };
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    for i in 0..5 {
        drv.d
            .accept_event(T0, &tenant("acme"), event(&format!("e{i}"), "a.b"))
            .unwrap();
    }
    drv
}

#[test]
fn in_flight_cap_and_rate_limit() {
    let mut drv = capped_with_five_events(3);
    let sent = drv.step();
    assert_eq!(sent.len(), 3);
    assert_eq!(drv.d.stats().in_flight, 3);
    drv.reply(&sent[0], status(200));
    assert_eq!(drv.step().len(), 1);

    let mut s = spec(&["*"]);
    s.limits.rate = Some(RateLimit { per_s: 2, burst: 1 });
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    for i in 0..3 {
        drv.d
            .accept_event(T0, &tenant("acme"), event(&format!("e{i}"), "a.b"))
            .unwrap();
    }
    assert_eq!(drv.step().len(), 1);
    assert_eq!(drv.d.next_deadline_ms(), Some(T0 + 500));
    assert!(drv.advance_to(T0 + 499).is_empty());
    assert_eq!(drv.advance_to(T0 + 500).len(), 1);
    assert_eq!(drv.advance_to(T0 + 1_000).len(), 1);
}

/// A breaker that opens after two failures in a row, for 10 s at first.
fn breaker_config() -> DispatcherConfig {
    DispatcherConfig {
        health: HealthPolicy {
            breaker_failures: 2,
            breaker_open_ms: 10_000,
            breaker_open_ms_max: 40_000,
            disable_after_failing_ms: 1_000 * HOUR,
        },
        ..DispatcherConfig::default()
    }
}

/// A webhook of [`breaker_config`], retried after 1 s, whose `events` first attempts
/// all failed (503): its breaker is open.
fn breaker_opened_by(events: usize) -> Driver {
    let s = spec_retrying(&["*"], vec![1_000; 5]);
    let mut drv = one_webhook(breaker_config(), s);
    for i in 0..events {
        drv.d
            .accept_event(T0, &tenant("acme"), event(&format!("e{i}"), "a.b"))
            .unwrap();
    }
    let sent = drv.step();
    assert_eq!(sent.len(), events);
    for req in &sent {
        drv.reply(req, status(503));
    }
    drv.step();
    drv
}

#[test]
fn breaker_holds_deliveries_and_probes_once() {
    let mut drv = breaker_opened_by(2);
    let health = drv
        .d
        .webhook(&tenant("acme"), &wh("w1"))
        .unwrap()
        .health
        .clone();
    assert!(matches!(health.breaker, Breaker::Open { .. }));
    // Retries are due at +1 s but wait for the breaker.
    assert!(drv.advance_to(T0 + 9_999).is_empty());
    let probe = drv.advance_to(T0 + 10_000);
    assert_eq!(probe.len(), 1, "one probe at a time");
    assert!(drv.advance_to(T0 + 10_500).is_empty());
    drv.reply(&probe[0], status(200));
    let rest = drv.step();
    assert_eq!(
        rest.len(),
        1,
        "the breaker closed and the other delivery flows"
    );
    assert_eq!(
        drv.d
            .webhook(&tenant("acme"), &wh("w1"))
            .unwrap()
            .health
            .breaker,
        Breaker::Closed
    );
}

/// A checkpoint keeps an endpoint's failure count but not its breaker: after a restart
/// from one, an endpoint that had opened its breaker is probed once before the rest of
/// its backlog is sent again.
#[test]
fn after_a_restart_a_failing_endpoint_is_probed_first() {
    let drv = breaker_opened_by(4);
    let checkpoint = drv.d.checkpoint(drv.now);
    let mut restarted = Dispatcher::new(breaker_config(), T0);
    restarted.replay(&checkpoint).unwrap();
    restarted.replay_finished(drv.now);
    let mut drv = Driver {
        d: restarted,
        now: drv.now,
        sent: Vec::new(),
        records: Vec::new(),
        auto_durable: true,
        ticks_per_step: usize::MAX,
    };
    drv.step();
    // The retries are due at +1 s: one goes, the rest wait for its outcome.
    let probe = drv.advance_to(T0 + 1_000);
    assert_eq!(probe.len(), 1, "one probe after the restart");
    assert!(drv.advance_to(T0 + 1_500).is_empty());
    drv.reply(&probe[0], status(200));
    assert_eq!(drv.step().len(), 3, "the endpoint answered: the rest flow");
}

#[test]
fn attempts_refused_before_sending_leave_the_endpoints_health_alone() {
    for refused in [TransportError::InvalidRequest, TransportError::EgressDenied] {
        let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
        let t = tenant("acme");
        let health = |drv: &Driver| drv.d.webhook(&t, &wh("w1")).unwrap().health.clone();
        drv.d.accept_event(T0, &t, event("e1", "a.b")).unwrap();
        let first = drv.step().remove(0);
        assert!(drv.reply(&first, status(503)));
        drv.step();
        assert_eq!(health(&drv).consecutive_failures, 1);
        // The next attempt never reaches the receiver: the delivery fails for good, the
        // failure count neither grows nor resets, and the in-flight slot is free.
        drv.d.accept_event(T0, &t, event("e2", "a.b")).unwrap();
        let second = drv.step().remove(0);
        assert!(drv.reply(&second, AttemptResult::Transport(refused)));
        drv.step();
        let after = health(&drv);
        assert_eq!(after.consecutive_failures, 1, "{refused:?}");
        assert_eq!(after.in_flight, 0, "{refused:?}");
        assert_eq!(after.breaker, Breaker::Closed, "{refused:?}");
        let delivery = drv.d.delivery(&t, second.delivery).unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Failed, "{refused:?}");
    }
}

#[test]
fn attempts_without_a_connection_are_retried_and_never_count_against_the_endpoint() {
    // One endpoint's connections can be refused because others hold the driver's whole
    // connection budget: more such refusals than the breaker's threshold, and for longer
    // than the auto-disable period, leave the endpoint's breaker closed and its webhook
    // enabled; the delivery is retried by schedule and succeeds.
    let config = health_config(2, 2 * MIN);
    let busy = spec_retrying(&["*"], vec![MIN; 8]);
    let mut drv = one_webhook(config.clone(), busy);
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e1", "a.b")).unwrap();
    let mut req = drv.step().remove(0);
    for refused in 1..=5 {
        assert!(drv.reply(&req, AttemptResult::Transport(TransportError::PoolFull)));
        drv.step();
        let view = drv.d.webhook(&t, &wh("w1")).unwrap();
        assert_eq!(view.health.consecutive_failures, 0, "refusal {refused}");
        assert_eq!(view.health.failing_since_ms, None, "refusal {refused}");
        assert_eq!(view.health.breaker, Breaker::Closed, "refusal {refused}");
        assert_eq!(view.health.in_flight, 0, "refusal {refused}");
        assert!(view.spec.status.is_active(), "refusal {refused}");
        let rec = drv.d.delivery(&t, req.delivery).unwrap();
        assert_eq!(rec.status, DeliveryStatus::Pending, "refusal {refused}");
        assert_eq!(
            rec.error,
            Some(DeliveryError::Transport(TransportError::PoolFull))
        );
        req = drv.next_attempt(&t, &req);
        assert_eq!(req.attempt, refused + 1);
    }
    assert!(drv.reply(&req, status(200)));
    drv.step();
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Success);
    // Replay rebuilds the same health from the records.
    let replayed = replayed_like(config, &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
}

/// Makes `webhook` (retried after `delays_ms`) the tenant's only active one, publishes
/// `event_id` and answers its first attempt `pool_full`: that attempt and when.
fn refused_with_a_schedule_of(
    drv: &mut Driver,
    t: &TenantId,
    webhook: &str,
    delays_ms: Vec<u64>,
    event_id: &str,
) -> (SendRequest, u64) {
    let others: Vec<WebhookId> = drv.d.webhooks(t).map(|view| view.id.clone()).collect();
    for other in others {
        drv.d
            .upsert_webhook(drv.now, t.clone(), other, disabled_by_hand(&["*"], drv.now))
            .unwrap();
    }
    drv.d
        .upsert_webhook(
            drv.now,
            t.clone(),
            wh(webhook),
            spec_retrying(&["*"], delays_ms),
        )
        .unwrap();
    drv.step();
    drv.d
        .accept_event(drv.now, t, event(event_id, "a.b"))
        .unwrap();
    let req = drv.step().remove(0);
    let at = drv.now;
    assert!(drv.reply(&req, AttemptResult::Transport(TransportError::PoolFull)));
    (req, at)
}

/// An attempt the driver had no connection for sends nothing, so it does not use up the
/// delivery's schedule: a webhook that allows two attempts, refused a connection four
/// times, still makes both (the delivery ends exhausted at its sixth attempt, not its
/// second), each refusal retried after a minute doubled for each one before it in a row.
/// One whose schedule allows
/// no retry at all is tried again after `NO_CONNECTION_RETRY_MS`. Replay and a
/// checkpoint rebuild the same allowances.
#[test]
fn attempts_without_a_connection_do_not_use_up_the_schedule() {
    let config = DispatcherConfig {
        jitter_percent: 0,
        ..DispatcherConfig::default()
    };
    let mut drv = one_webhook(config.clone(), spec_retrying(&["*"], vec![MIN]));
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e1", "a.b")).unwrap();
    let mut req = drv.step().remove(0);
    for refused in 1..=4 {
        // Whatever the schedule: a minute, doubled for each refusal in a row.
        let refusal = AttemptResult::Transport(TransportError::PoolFull);
        assert_eq!(
            drv.retried_after(&t, &req, refusal),
            Some(MIN << (refused - 1)),
            "refusal {refused}"
        );
        req = drv.next_attempt(&t, &req);
        assert_eq!(req.attempt, refused + 1);
    }
    // The two attempts the schedule allows, both still owed.
    assert!(drv.reply(&req, status(503)));
    drv.step();
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Pending);
    req = drv.next_attempt(&t, &req);
    assert_eq!(req.attempt, 6);
    assert!(drv.reply(&req, status(503)));
    drv.step();
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Exhausted);
    assert_eq!(rec.attempts.len(), 6);

    // A schedule of immediate retries: a refusal still waits the floor, rather than be
    // refused again at once for as long as the connections stay busy.
    let (req, at) = refused_with_a_schedule_of(&mut drv, &t, "w3", vec![0, 0], "e3");
    assert!(drv.step().is_empty(), "no attempt at once");
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(
        rec.next_retry_at_ms,
        Some(at + crate::retry::NO_CONNECTION_RETRY_MS)
    );
    // A 503 is retried at once, as its schedule says.
    let req = drv.next_attempt(&t, &req);
    let at = drv.now;
    assert!(drv.reply(&req, status(503)));
    let req = drv.step().remove(0);
    assert_eq!((req.attempt, drv.now), (3, at));
    assert!(drv.reply(&req, status(200)));
    drv.step();

    // A schedule without retries: the one attempt it allows is still owed.
    let (req, at) = refused_with_a_schedule_of(&mut drv, &t, "w2", vec![], "e2");
    drv.step();
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Pending);
    assert_eq!(
        rec.next_retry_at_ms,
        Some(at + crate::retry::NO_CONNECTION_RETRY_MS)
    );
    // Replay rebuilds the raised allowance from the records alone (here and once the
    // delivery ended, and through a checkpoint).
    let replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
    let req = drv.next_attempt(&t, &req);
    assert_eq!(req.attempt, 2);
    assert!(drv.reply(&req, status(503)));
    drv.step();
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Exhausted);
    let replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
    let mut restored = Dispatcher::new(config, T0);
    restored.replay(&snapshot(&drv.d)).unwrap();
    assert_same(&snapshot(&restored), &snapshot(&drv.d));
}

/// Attempts that found no connection leave a delivery where it stood in its schedule:
/// each is tried again after a minute doubled for each refusal in a row (not at the
/// schedule's later delays), and the next failure of an attempt that was sent waits the
/// delay its schedule gives the attempts that were sent. Replay and a checkpoint
/// rebuild the same schedule.
#[test]
fn attempts_without_a_connection_keep_the_delivery_in_its_schedule() {
    let config = DispatcherConfig {
        jitter_percent: 0,
        ..DispatcherConfig::default()
    };
    let delays = vec![2 * MIN, 5 * MIN, 30 * MIN, 120 * MIN];
    let mut drv = one_webhook(config.clone(), spec_retrying(&["*"], delays));
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e1", "a.b")).unwrap();
    let mut req = drv.step().remove(0);
    let refusal = || AttemptResult::Transport(TransportError::PoolFull);
    let floor = crate::retry::NO_CONNECTION_RETRY_MS;
    // Refused three times in a row: 1, 2 and 4 minutes, not 2, 5 and 30.
    for refused in 1..=3 {
        let after = drv.retried_after(&t, &req, refusal());
        assert_eq!(after, Some(floor << (refused - 1)), "refusal {refused}");
        req = drv.next_attempt(&t, &req);
    }
    // The first attempt that was sent fails: the schedule's first delay.
    assert_eq!(req.attempt, 4);
    assert_eq!(drv.retried_after(&t, &req, status(503)), Some(2 * MIN));
    // Refused once more: the row starts again at a minute.
    req = drv.next_attempt(&t, &req);
    assert_eq!(drv.retried_after(&t, &req, refusal()), Some(floor));
    // The second attempt that was sent fails: the schedule's second delay.
    req = drv.next_attempt(&t, &req);
    assert_eq!(req.attempt, 6);
    assert_eq!(drv.retried_after(&t, &req, status(503)), Some(5 * MIN));
    // Rebuilt from the records, and from a checkpoint, the delivery stands in the same
    // place: its next failure waits the third delay.
    let replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
    let mut restored = Dispatcher::new(config, T0);
    restored.replay(&snapshot(&drv.d)).unwrap();
    assert_same(&snapshot(&restored), &snapshot(&drv.d));
    drv.d = restored;
    req = drv.next_attempt(&t, &req);
    assert_eq!(req.attempt, 7);
    assert_eq!(drv.retried_after(&t, &req, status(503)), Some(30 * MIN));
}

/// A congestion longer than the history holds attempts: the delivery refused 40 times in
/// a row (a minute, doubled each time up to half an hour) between two failures that
/// were sent. The history drops refused
/// attempts first, so it still holds both that were sent, and the second failure waits
/// the schedule's second delay (dropping the oldest entry instead lost the first
/// failure, and the delivery went back to its first delay).
#[test]
fn a_congestion_longer_than_the_history_keeps_the_delivery_in_its_schedule() {
    let config = DispatcherConfig {
        jitter_percent: 0,
        ..DispatcherConfig::default()
    };
    let delays = vec![2 * MIN, 5 * MIN, 30 * MIN];
    let mut drv = one_webhook(config.clone(), spec_retrying(&["*"], delays));
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e1", "a.b")).unwrap();
    let mut req = drv.step().remove(0);
    assert_eq!(drv.retried_after(&t, &req, status(503)), Some(2 * MIN));
    let refusals = ATTEMPT_HISTORY_MAX as u32 + 8;
    for refused in 1..=refusals {
        req = drv.next_attempt(&t, &req);
        let refusal = AttemptResult::Transport(TransportError::PoolFull);
        let after = drv.retried_after(&t, &req, refusal);
        // A minute doubled for each refusal in a row, at most half an hour.
        let expected = (MIN << (refused - 1).min(5)).min(30 * MIN);
        assert_eq!(after, Some(expected), "{refused}");
    }
    req = drv.next_attempt(&t, &req);
    assert_eq!(req.attempt, refusals + 2);
    assert_eq!(drv.retried_after(&t, &req, status(503)), Some(5 * MIN));
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.attempts.len(), ATTEMPT_HISTORY_MAX);
    let sent: Vec<u32> = rec
        .attempts
        .iter()
        .filter(|a| a.error != Some(DeliveryError::Transport(TransportError::PoolFull)))
        .map(|a| a.attempt)
        .collect();
    assert_eq!(
        sent,
        vec![1, refusals + 2],
        "both attempts that were sent are kept"
    );
    // Replayed and restored alike.
    let replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
    let mut restored = Dispatcher::new(config, T0);
    restored.replay(&snapshot(&drv.d)).unwrap();
    assert_same(&snapshot(&restored), &snapshot(&drv.d));
}

/// An endpoint failing for longer than the auto-disable period is disabled at its next
/// failure, not at an attempt the driver had no connection for.
#[test]
fn an_attempt_without_a_connection_never_disables_a_webhook() {
    let config = health_config(1_000, 10 * MIN);
    let failing = spec_retrying(&["*"], vec![6 * MIN; 10]);
    let mut drv = one_webhook(config, failing);
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    let req = drv.step().remove(0);
    assert!(drv.reply(&req, status(503)));
    let req = drv.next_attempt(&t, &req);
    assert!(drv.reply(&req, status(503)));
    // 12 minutes failing: past the period. No connection: still enabled.
    let req = drv.next_attempt(&t, &req);
    assert!(drv.reply(&req, AttemptResult::Transport(TransportError::PoolFull)));
    drv.step();
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert!(view.spec.status.is_active(), "{:?}", view.spec.status);
    // The endpoint's own next failure disables it.
    let req = drv.next_attempt(&t, &req);
    assert!(drv.reply(&req, status(503)));
    drv.step();
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert!(!view.spec.status.is_active());
}

/// Auto-disable counts failing the endpoint was seen doing. A webhook whose one event
/// failed and that then went quiet for longer than the period and the longest its
/// deliveries could wait between attempts is not disabled by the next event's failure:
/// that failure starts a new run. Failing events
/// that keep coming (here every 90 s, with no retries, so each delivery is exhausted at
/// once and none is pending between them) disable it a period into the new run; and a
/// journal replays to the same state.
#[test]
fn a_failure_after_a_quiet_spell_starts_the_failing_clock_again() {
    let config = health_config(1_000, 10 * MIN);
    let mut drv = one_webhook(config.clone(), spec_retrying(&["*"], vec![]));
    // The longest its deliveries could wait between attempts: a `Retry-After` (no
    // retries here, no jitter) and the request's timeout.
    let gap = crate::retry::RETRY_AFTER_MS_MAX + EndpointLimits::default().request_timeout_ms;
    let t = tenant("acme");
    let mut n = 0;
    let mut fail_one = |drv: &mut Driver| {
        n += 1;
        drv.d
            .accept_event(drv.now, &t, event(&format!("e{n}"), "order.created"))
            .unwrap();
        let req = drv.step().remove(0);
        drv.reply(&req, AttemptResult::Transport(TransportError::Connect));
        drv.step();
        let rec = drv.d.delivery(&t, req.delivery).unwrap();
        assert_eq!(rec.status, DeliveryStatus::Exhausted);
    };
    let status = |drv: &Driver| drv.d.webhook(&t, &wh("w1")).unwrap().spec.status;
    fail_one(&mut drv);
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert_eq!(view.health.failing_since_ms, Some(T0));
    // Quiet for the period and the gap: the next failure starts a new run.
    drv.advance_to(T0 + 10 * MIN + gap);
    let restarted = drv.now;
    fail_one(&mut drv);
    assert!(status(&drv).is_active(), "{:?}", status(&drv));
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert_eq!(view.health.failing_since_ms, Some(restarted));
    // Failing events keep coming: a period into the new run the webhook is disabled.
    while status(&drv).is_active() {
        assert!(drv.now < restarted + 20 * MIN, "never disabled");
        drv.advance_to(drv.now + 90_000);
        fail_one(&mut drv);
    }
    let WebhookStatus::Disabled { reason, at_ms } = status(&drv) else {
        unreachable!()
    };
    assert_eq!(reason, DisableReason::FailingTooLong);
    assert!(
        (restarted + 10 * MIN..restarted + 10 * MIN + 90_000).contains(&at_ms),
        "disabled at {at_ms}, the run began at {restarted}"
    );
    let replayed = replayed_like(config, &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
}

/// An endpoint whose schedule waits longer between attempts than a `Retry-After` may
/// (two days here) is being tried all along: its failure two days after the last, past
/// the period, disables it rather than start a new run.
#[test]
fn a_long_retry_schedule_still_disables_a_failing_webhook() {
    let config = health_config(1_000, 10 * MIN);
    let days = 24 * 60 * MIN;
    let failing = spec_retrying(&["*"], vec![6 * MIN, 2 * days, 2 * days]);
    let mut drv = one_webhook(config, failing);
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    let mut req = drv.step().remove(0);
    for _ in 0..2 {
        assert!(drv.reply(&req, status(503)));
        req = drv.next_attempt(&t, &req);
    }
    assert_eq!(drv.now, T0 + 6 * MIN + 2 * days);
    assert!(drv.reply(&req, status(503)));
    drv.step();
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert_eq!(
        view.spec.status,
        WebhookStatus::Disabled {
            reason: DisableReason::FailingTooLong,
            at_ms: T0 + 6 * MIN + 2 * days
        }
    );
}

#[test]
fn failing_too_long_disables_and_publishes_operational_event() {
    let config = health_config(1_000, 10 * MIN);
    let failing = spec_retrying(&["order.*"], vec![4 * MIN; 10]);
    let mut drv = one_webhook(config, failing);
    // A second webhook of the same tenant subscribes to operational events; one of
    // another tenant must not see them.
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("ops"), spec(&["webhook.*"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, tenant("other"), wh("ops"), spec(&["*"]))
        .unwrap();
    drv.d
        .accept_event(T0, &tenant("acme"), event("e0", "order.created"))
        .unwrap();
    let mut req = drv.step().remove(0);
    let mut ops = Vec::new();
    for _ in 0..4 {
        drv.reply(&req, AttemptResult::Transport(TransportError::Connect));
        let sent = drv.step();
        ops.extend(sent.into_iter().filter(|r| r.webhook == wh("ops")));
        let rec = drv.d.delivery(&tenant("acme"), req.delivery).unwrap();
        match rec.next_retry_at_ms {
            Some(at) => req = drv.advance_to(at).remove(0),
            None => break,
        }
    }
    let view = drv.d.webhook(&tenant("acme"), &wh("w1")).unwrap();
    assert_eq!(
        view.spec.status,
        WebhookStatus::Disabled {
            reason: DisableReason::FailingTooLong,
            at_ms: T0 + 12 * MIN
        }
    );
    let rec = drv.d.delivery(&tenant("acme"), req.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Failed);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].tenant, tenant("acme"));
    let body: serde_json::Value = serde_json::from_slice(&ops[0].body).unwrap();
    assert_eq!(body["type"], WEBHOOK_DISABLED_EVENT);
    assert_eq!(body["data"]["webhook_id"], "w1");
    assert_eq!(body["data"]["reason"], "failing_too_long");
    // New events no longer reach the disabled webhook.
    let accepted = drv
        .d
        .accept_event(drv.now, &tenant("acme"), event("e1", "order.created"))
        .unwrap();
    assert_eq!(accepted.deliveries, 0);
}

/// An answer to an attempt that was out while the webhook changed (a new URL) says
/// nothing of the endpoint now: a 410 from the address it left is retried at the new
/// one, and no failure counts toward the breaker or the failing clock.
#[test]
fn an_answer_from_before_a_change_of_url_does_not_disable_or_count() {
    let mut drv = one_webhook(health_config(1, 10 * MIN), spec(&["order.*"]));
    let t = tenant("acme");
    drv.d
        .accept_event(T0, &t, event("e0", "order.created"))
        .unwrap();
    drv.d
        .accept_event(T0, &t, event("e1", "order.created"))
        .unwrap();
    let sent = drv.step();
    assert_eq!(sent.len(), 2);
    // The URL changes while both attempts are out; then their answers come.
    drv.now += 5;
    let mut moved = spec(&["order.*"]);
    moved.url = Url::parse("https://new.example/hook").unwrap();
    drv.d
        .update_webhook(drv.now, t.clone(), wh("w1"), moved)
        .unwrap();
    drv.now += 5;
    drv.reply(&sent[0], status(410));
    drv.reply(&sent[1], status(503));
    drv.step();
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert!(view.spec.status.is_active(), "{:?}", view.spec.status);
    assert_eq!(view.health.breaker, Breaker::Closed);
    assert_eq!(view.health.failing_since_ms, None);
    for req in &sent {
        let rec = drv.d.delivery(&t, req.delivery).unwrap();
        assert_eq!(rec.status, DeliveryStatus::Pending, "{rec:?}");
    }
    // The retry goes to the new address, and its answer counts.
    let retry = drv.next_attempt(&t, &sent[0]);
    assert_eq!(retry.url.to_string(), "https://new.example/hook");
    drv.reply(&retry, status(410));
    drv.step();
    assert!(matches!(
        drv.d.webhook(&t, &wh("w1")).unwrap().spec.status,
        WebhookStatus::Disabled {
            reason: DisableReason::Gone,
            ..
        }
    ));
    let replayed = replayed_like(health_config(1, 10 * MIN), &drv.records, &drv.d);
    assert_eq!(snapshot(&replayed), snapshot(&drv.d));
}

/// Signatures carry the driver's clock, not the dispatcher's, which never goes back:
/// after the host's clock ran ahead and was stepped back, a receiver comparing the
/// timestamp with its own clock must not see it in the future.
#[test]
fn signatures_carry_the_wall_clock_after_it_stepped_back() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["order.*"]));
    let t = tenant("acme");
    drv.d.tick(T0 + 3_600_000);
    drv.now = T0 + 2_000;
    drv.d
        .accept_event(drv.now, &t, event("e0", "order.created"))
        .unwrap();
    let req = drv.step().remove(0);
    assert_eq!(
        req.headers.get("webhook-timestamp"),
        Some(((T0 + 2_000) / 1000).to_string().as_str())
    );
}

#[test]
fn filters_and_tenant_isolation() {
    let mut drv = Driver::new(DispatcherConfig::default());
    for (t, w, f) in [
        ("a", "exact", "order.created"),
        ("a", "prefix", "order.*"),
        ("a", "all", "*"),
        ("a", "other", "payment.*"),
        ("b", "all", "*"),
    ] {
        drv.d
            .upsert_webhook(T0, tenant(t), wh(w), spec(&[f]))
            .unwrap();
    }
    drv.d
        .accept_event(T0, &tenant("a"), event("e0", "order.created"))
        .unwrap();
    let sent = drv.step();
    let got: Vec<(String, String)> = sent
        .iter()
        .map(|r| (r.tenant.to_string(), r.webhook.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("a".to_string(), "all".to_string()),
            ("a".to_string(), "exact".to_string()),
            ("a".to_string(), "prefix".to_string())
        ]
    );
}

#[test]
fn delete_ends_pending_and_ignores_stale_outcomes() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(T0, &tenant("acme"), event("e0", "a.b"))
        .unwrap();
    let req = drv.step().remove(0);
    drv.d
        .delete_webhook(T0, &tenant("acme"), &wh("w1"))
        .unwrap();
    drv.step();
    assert!(!drv.reply(&req, status(200)), "stale outcome is ignored");
    let rec = drv.d.delivery(&tenant("acme"), req.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Failed);
    assert_eq!(rec.error, Some(DeliveryError::WebhookDeleted));
    assert_eq!(drv.d.stats().pending_deliveries, 0);
    assert_eq!(drv.d.stats().in_flight, 0);
    assert!(matches!(
        drv.d.delete_webhook(T0, &tenant("acme"), &wh("w1")),
        Err(RegistryError::NotFound { .. })
    ));
    // A wrong attempt number is stale too.
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(T0, &tenant("acme"), event("e0", "a.b"))
        .unwrap();
    let mut req = drv.step().remove(0);
    req.attempt += 1;
    assert!(!drv.reply(&req, status(200)));
}

#[test]
fn manual_operations() {
    let s = spec_retrying(&["*"], vec![HOUR]);
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    drv.d.accept_event(T0, &t, event("e1", "a.b")).unwrap();
    let sent = drv.step();
    drv.reply(&sent[0], status(500));
    drv.reply(&sent[1], status(400));
    drv.step();
    // Retry now: the scheduled one moves to now.
    drv.d.retry_delivery(drv.now, &t, sent[0].delivery).unwrap();
    let again = drv.step();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].delivery, again[0].attempt), (sent[0].delivery, 2));
    drv.reply(&again[0], status(500));
    drv.step();
    let rec = drv.d.delivery(&t, sent[0].delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Exhausted);
    // In flight: refused.
    drv.d.accept_event(drv.now, &t, event("e2", "a.b")).unwrap();
    let busy = drv.step().remove(0);
    assert_eq!(
        drv.d.retry_delivery(drv.now, &t, busy.delivery),
        Err(OpError::InProgress(busy.delivery))
    );
    drv.reply(&busy, status(200));
    assert_eq!(
        drv.d.retry_delivery(drv.now, &t, busy.delivery),
        Err(OpError::AlreadySucceeded(busy.delivery))
    );
    // Another tenant cannot touch it.
    assert_eq!(
        drv.d
            .retry_delivery(drv.now, &tenant("evil"), busy.delivery),
        Err(OpError::DeliveryNotFound(busy.delivery))
    );
    // Re-send failed since T0: the exhausted and the failed ones, not the success.
    drv.now += MIN;
    assert_eq!(drv.d.resend_failed(drv.now, &t, &wh("w1"), T0).unwrap(), 2);
    let resent = drv.step();
    let mut got: Vec<(DeliveryId, u32)> = resent.iter().map(|r| (r.delivery, r.attempt)).collect();
    got.sort();
    assert_eq!(got, [(sent[0].delivery, 3), (sent[1].delivery, 2)]);
    for r in &resent {
        drv.reply(r, status(200));
    }
    drv.step();
    assert_eq!(drv.d.resend_failed(drv.now, &t, &wh("w1"), T0).unwrap(), 0);
    assert_eq!(
        drv.d.resend_failed(drv.now, &t, &wh("nope"), T0),
        Err(OpError::WebhookNotFound {
            tenant: t.clone(),
            webhook: wh("nope")
        })
    );
    // Test event: reaches the webhook whatever its filters.
    let mut narrow = spec(&["only.this"]);
    narrow.url = Url::parse("http://narrow.example/").unwrap();
    drv.d
        .upsert_webhook(drv.now, t.clone(), wh("narrow"), narrow)
        .unwrap();
    let accepted = drv
        .d
        .send_test_event(
            drv.now,
            &t,
            &wh("narrow"),
            EventType::parse("ping.test").unwrap(),
        )
        .unwrap();
    assert_eq!(accepted.deliveries, 1);
    let test = drv.step().remove(0);
    assert_eq!(test.webhook, wh("narrow"));
    let body: serde_json::Value = serde_json::from_slice(&test.body).unwrap();
    assert_eq!(body["type"], "ping.test");
    assert_eq!(body["data"]["test"], true);
    assert_eq!(accepted.first_delivery, Some(test.delivery));

    // A test send with the caller's event: its id, type and data, one delivery reported.
    let mut chosen = event("evt_chosen", "order.created");
    chosen.data = br#"{"order":7}"#.to_vec();
    let accepted = drv
        .d
        .send_test_event_with(drv.now, &t, &wh("narrow"), chosen)
        .unwrap();
    assert_eq!(accepted.event_id.as_str(), "evt_chosen");
    let test = drv.step().remove(0);
    assert_eq!(accepted.first_delivery, Some(test.delivery));
    assert_eq!(test.event_id.as_str(), "evt_chosen");
    let body: serde_json::Value = serde_json::from_slice(&test.body).unwrap();
    assert_eq!(body["data"]["order"], 7);
    let mut invalid = event("evt_bad", "order.created");
    invalid.data = b"{".to_vec();
    assert!(matches!(
        drv.d
            .send_test_event_with(drv.now, &t, &wh("narrow"), invalid),
        Err(OpError::Accept(AcceptError::Envelope(_)))
    ));
}

/// One tenant's flood of finished deliveries evicts its own oldest once it holds its
/// share of the log, not the shard's other tenants' history; a re-queued delivery
/// leaves the tenant's count, and the log replays to the same state.
#[test]
fn one_tenant_flooding_the_log_evicts_its_own_deliveries_first() {
    let config = DispatcherConfig {
        log_finished_max: 10,
        log_finished_per_tenant_max: 6,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config.clone());
    let (busy, quiet) = (tenant("busy"), tenant("quiet"));
    for t in [&busy, &quiet] {
        drv.d
            .upsert_webhook(T0, t.clone(), wh("w"), spec(&["*"]))
            .unwrap();
    }
    // Publishes and answers `code` until every delivery ended (in the order sent).
    let finish = |drv: &mut Driver, t: &TenantId, names: std::ops::Range<usize>, code: u16| {
        for i in names {
            drv.d
                .accept_event(T0, t, event(&format!("{t}{i}"), "x.y"))
                .unwrap();
        }
        let mut all = Vec::new();
        let mut sent = drv.step();
        while !sent.is_empty() {
            for req in &sent {
                drv.reply(req, status(code));
            }
            all.append(&mut sent);
            sent = drv.step();
        }
        all
    };
    let quiet_sent = finish(&mut drv, &quiet, 0..3, 200);
    // Failed finally (400): retryable by hand below.
    let busy_sent = finish(&mut drv, &busy, 0..20, 400);
    assert_eq!(busy_sent.len(), 20);
    // The quiet tenant's history stays; the busy one keeps its newest six.
    for req in &quiet_sent {
        assert!(drv.d.delivery(&quiet, req.delivery).is_some());
    }
    let kept: Vec<_> = busy_sent
        .iter()
        .filter(|req| drv.d.delivery(&busy, req.delivery).is_some())
        .map(|req| req.delivery)
        .collect();
    let newest: Vec<_> = busy_sent[14..].iter().map(|req| req.delivery).collect();
    assert_eq!(kept, newest);
    assert_eq!(drv.d.stats().deliveries_retained, 9);
    // Retried by hand, a kept failed delivery is pending again: out of the busy tenant's
    // count, so the next one to end takes its place without evicting another.
    drv.d.retry_delivery(drv.now, &busy, newest[0]).unwrap();
    let again = drv.step();
    assert_eq!(again.len(), 1);
    drv.reply(&again[0], status(200));
    drv.step();
    assert!(newest.iter().all(|&id| drv.d.delivery(&busy, id).is_some()));
    // More of the busy tenant's endings push out its own oldest, not the quiet one's.
    finish(&mut drv, &busy, 20..22, 200);
    assert_eq!(drv.d.stats().deliveries_retained, 9);
    assert!(quiet_sent
        .iter()
        .all(|req| drv.d.delivery(&quiet, req.delivery).is_some()));
    // The shard's limit still applies, the oldest first across tenants: a third
    // tenant's five endings push out the quiet tenant's three and one of the busy's.
    let third = tenant("third");
    drv.d
        .upsert_webhook(T0, third.clone(), wh("w"), spec(&["*"]))
        .unwrap();
    finish(&mut drv, &third, 0..5, 200);
    assert_eq!(drv.d.stats().deliveries_retained, 10);
    assert!(quiet_sent
        .iter()
        .all(|req| drv.d.delivery(&quiet, req.delivery).is_none()));
    let replayed = replayed_like(config, &drv.records, &drv.d);
    assert_eq!(snapshot(&replayed), snapshot(&drv.d));
}

/// The log evicts by when deliveries ended, then by id, not in the order they ended
/// within one millisecond: the order a checkpoint, which lists them by id with their end
/// times, restores. A log restored from one then evicts what the live log evicts, and a
/// journal replays to the live state.
#[test]
fn the_log_evicts_in_the_order_a_checkpoint_restores() {
    let config = DispatcherConfig {
        log_finished_max: 4,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config.clone());
    let t = tenant("acme");
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w"), spec(&["*"]))
        .unwrap();
    let publish_and_answer = |drv: &mut Driver, names: std::ops::Range<usize>| {
        for i in names {
            drv.d
                .accept_event(drv.now, &t, event(&format!("e{i}"), "x.y"))
                .unwrap();
        }
        let mut sent = drv.step();
        sent.sort_by_key(|req| req.delivery);
        // Answered in one millisecond, the highest id first.
        for req in sent.iter().rev() {
            drv.reply(req, status(200));
        }
        drv.step();
        sent.into_iter().map(|req| req.delivery).collect::<Vec<_>>()
    };
    let kept = |d: &Dispatcher, ids: &[DeliveryId]| -> Vec<DeliveryId> {
        ids.iter()
            .copied()
            .filter(|&id| d.delivery(&tenant("acme"), id).is_some())
            .collect()
    };
    let first = publish_and_answer(&mut drv, 0..6);
    assert_eq!(first.len(), 6);
    assert_eq!(kept(&drv.d, &first), first[2..]);
    let covers = drv.records.len();
    let checkpoint = drv.d.checkpoint(drv.now);
    drv.now += 1000;
    let later = publish_and_answer(&mut drv, 6..8);
    let all: Vec<DeliveryId> = first.iter().chain(&later).copied().collect();
    assert_eq!(kept(&drv.d, &all), [&first[4..], &later[..]].concat());
    let mut restored = Dispatcher::new(config, T0);
    restored.replay(&checkpoint).unwrap();
    for record in &drv.records[covers..] {
        restored.replay(record).unwrap();
    }
    assert_eq!(kept(&restored, &all), kept(&drv.d, &all));
    assert_eq!(snapshot(&restored), snapshot(&drv.d));
}

/// Every tenant's part of the log lists only its deliveries still held: one the log
/// evicts for its limit leaves no stale entry behind in its tenant's order, so that no
/// tenant's order needs a compaction that looks up every entry in one go (several
/// tenants' at once under an even load). Nor does the log's own order keep one that a
/// tenant's share evicted at its front: with one tenant, every one is.
#[test]
fn evicting_leaves_no_stale_entries_in_the_orders() {
    let config = DispatcherConfig {
        log_finished_max: 8,
        log_finished_per_tenant_max: 5,
        ..DispatcherConfig::default()
    };
    for names in [&["a", "b", "c"][..], &["solo"][..]] {
        let mut drv = Driver::new(config.clone());
        let tenants: Vec<TenantId> = names.iter().copied().map(tenant).collect();
        for t in &tenants {
            drv.d
                .upsert_webhook(T0, t.clone(), wh("w"), spec(&["*"]))
                .unwrap();
        }
        for round in 0..40 {
            for (i, t) in tenants.iter().enumerate() {
                drv.d
                    .accept_event(drv.now, t, event(&format!("e{round}-{i}"), "x.y"))
                    .unwrap();
            }
            for req in drv.step() {
                drv.reply(&req, status(200));
            }
            drv.step();
            drv.now += 1;
            let d = &drv.d;
            for (t, mine) in &d.finished_by_tenant {
                assert_eq!(mine.order.len(), mine.count, "tenant {t}, round {round}");
                assert!(mine.count <= 5);
            }
            let front = d.finished.front().expect("deliveries ended");
            assert!(
                outcome::is_current(&d.deliveries, front),
                "{names:?}, round {round}"
            );
            if tenants.len() == 1 {
                assert_eq!(d.finished.len(), d.finished_count, "round {round}");
            }
            assert!(d.finished_count <= 8);
        }
    }
}

/// A tenant over its share of the log evicts its own oldest, which stands behind other
/// tenants' older deliveries in the log's order: its entry there is marked evicted in
/// place, so that every stale entry of the log's order is either marked (dropped
/// without a look-up) or, for re-queued deliveries, left to the compaction of last
/// resort.
#[test]
fn a_tenant_over_its_share_marks_its_entries_in_the_logs_order() {
    let config = DispatcherConfig {
        log_finished_max: 8,
        log_finished_per_tenant_max: 5,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config);
    let (quiet, hot) = (tenant("quiet"), tenant("hot"));
    for t in [&quiet, &hot] {
        drv.d
            .upsert_webhook(T0, t.clone(), wh("w"), spec(&["*"]))
            .unwrap();
    }
    // One old delivery of a quiet tenant stays at the log's front throughout.
    drv.d
        .accept_event(drv.now, &quiet, event("q", "x.y"))
        .unwrap();
    for req in drv.step() {
        drv.reply(&req, status(200));
    }
    drv.step();
    let mut marked_most = 0;
    for round in 0..200 {
        drv.now += 1;
        drv.d
            .accept_event(drv.now, &hot, event(&format!("h{round}"), "x.y"))
            .unwrap();
        for req in drv.step() {
            drv.reply(&req, status(200));
        }
        drv.step();
        let d = &drv.d;
        let marked = d
            .finished
            .iter()
            .filter(|e| e.seq == outcome::EVICTED)
            .count();
        assert_eq!(marked, d.finished_evicted, "round {round}");
        assert_eq!(d.finished.len(), d.finished_count + marked, "round {round}");
        assert!(d.finished_count <= 6);
        marked_most = marked_most.max(marked);
    }
    // Marked entries pile up behind the quiet tenant's and are compacted in bulk.
    assert!(marked_most > 6, "{marked_most}");
    assert!(marked_most <= 65, "{marked_most}");
    assert!(drv.d.delivery(&quiet, DeliveryId(1)).is_some());
}

#[test]
fn delivery_log_queries_and_eviction() {
    let config = DispatcherConfig {
        log_finished_max: 5,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config.clone());
    let t = tenant("acme");
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w1"), spec(&["*"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w2"), spec(&["x.*"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, tenant("zed"), wh("w1"), spec(&["*"]))
        .unwrap();
    for i in 0..4 {
        drv.d
            .accept_event(T0, &t, event(&format!("e{i}"), "x.y"))
            .unwrap();
        drv.d
            .accept_event(T0, &tenant("zed"), event(&format!("z{i}"), "x.y"))
            .unwrap();
    }
    let sent = drv.step();
    assert_eq!(sent.len(), 12);
    // Page through acme's 8 deliveries, 3 at a time.
    let mut query = DeliveryQuery::tenant(t.clone());
    query.limit = 3;
    let mut seen = Vec::new();
    loop {
        let page = drv.d.deliveries(&query);
        assert!(page.items.len() <= 3);
        assert!(page.items.iter().all(|r| r.tenant == t));
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let mut by_webhook = DeliveryQuery::tenant(t.clone());
    by_webhook.webhook = Some(wh("w2"));
    assert_eq!(drv.d.deliveries(&by_webhook).items.len(), 4);
    let mut by_event = DeliveryQuery::tenant(t.clone());
    by_event.event = Some(EventId::parse("e1").unwrap());
    assert_eq!(drv.d.deliveries(&by_event).items.len(), 2);
    // Finish all: only the newest log_finished_max finished deliveries stay.
    for (i, req) in sent.iter().enumerate() {
        drv.reply(req, status(if i % 2 == 0 { 200 } else { 404 }));
    }
    drv.step();
    assert_eq!(drv.d.stats().deliveries_retained, 5);
    // Counted as evicted, live only: a replay of the same records evicts as much and
    // counts nothing.
    assert_eq!(drv.d.counters().deliveries_evicted, 12 - 5);
    let replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_eq!(replayed.stats().deliveries_retained, 5);
    assert_eq!(replayed.counters().deliveries_evicted, 0);
    // Evicted in the order they finished, by id within a millisecond (all of these
    // finished in one): the five highest ids stay.
    let mut by_id: Vec<&SendRequest> = sent.iter().collect();
    by_id.sort_by_key(|req| req.delivery);
    for (i, req) in by_id.iter().enumerate() {
        let kept = drv.d.delivery(&req.tenant, req.delivery).is_some();
        assert_eq!(kept, i >= by_id.len() - 5, "{}", req.delivery);
    }
    // A query examines at most QUERY_SCAN_MAX entries; here the log is short, so a
    // filter matching nothing ends in one empty last page.
    let mut none = DeliveryQuery::tenant(t.clone());
    none.event = Some(EventId::parse("nope").unwrap());
    assert_eq!(
        drv.d.deliveries(&none),
        Page {
            items: vec![],
            next_after: None
        }
    );
    let mut failed = DeliveryQuery::tenant(t.clone());
    failed.status = Some(DeliveryStatus::Failed);
    assert!(drv
        .d
        .deliveries(&failed)
        .items
        .iter()
        .all(|r| r.status == DeliveryStatus::Failed && r.response_status == Some(404)));
}

#[test]
fn timers_per_tick_limit() {
    // A restart with a backlog: every delivery waits for a retry that is due at once.
    let mut records = Vec::new();
    let mut next = 1;
    let fanout = 10;
    let events = TIMERS_PER_TICK_MAX / fanout + 100;
    let mut webhooks = Vec::new();
    for w in 0..fanout {
        let rec =
            crate::convert::webhook_to_rec(&tenant("acme"), &wh(&format!("w{w}")), &spec(&["*"]));
        webhooks.push(rec.webhook.clone());
        records.push(Record::WebhookUpserted(record::WebhookUpserted {
            at_ms: T0,
            webhook: rec,
        }));
    }
    for e in 0..events {
        let deliveries: Vec<record::DeliveryRef> = webhooks
            .iter()
            .map(|w| {
                next += 1;
                record::DeliveryRef {
                    delivery: next,
                    webhook: w.as_str().into(),
                    attempts_max: 7,
                }
            })
            .collect();
        let ids: Vec<u64> = deliveries.iter().map(|d| d.delivery).collect();
        records.push(Record::EventAccepted(record::EventAccepted {
            at_ms: T0,
            tenant: "acme".into(),
            event_id: EventId::parse(&format!("e{e}")).unwrap(),
            event_type: "a.b".into(),
            body: b"{}".to_vec(),
            deliveries: deliveries.into(),
            created_at_ms: T0,
            idempotency: None,
        }));
        for delivery in ids {
            records.push(Record::AttemptStarted(record::AttemptStarted {
                at_ms: T0,
                delivery,
                attempt: 1,
            }));
            records.push(Record::AttemptFinished(record::AttemptFinished {
                at_ms: T0,
                delivery,
                attempt: 1,
                status: 503,
                transport_error: None,
                latency_ms: 1,
                response_body: Vec::new(),
                response_headers: ResponseHeaders::new(),
                next_attempt_at_ms: Some(T0 + 500),
                final_status: None,
            }));
        }
    }
    // The failures must not open breakers: their wake-up timers would count too.
    let config = DispatcherConfig {
        health: HealthPolicy {
            breaker_failures: u32::MAX,
            ..HealthPolicy::default()
        },
        ..DispatcherConfig::default()
    };
    let mut d = Dispatcher::new(config, T0);
    for r in &records {
        d.replay(r).unwrap();
    }
    d.replay_finished(T0 + 1_000);
    let total = events * fanout;
    assert_eq!(d.stats().timers, total);
    d.tick(T0 + 1_000);
    assert_eq!(d.stats().timers, total - TIMERS_PER_TICK_MAX);
    assert!(d.next_deadline_ms().is_some_and(|t| t <= T0 + 1_000));
    d.tick(T0 + 1_000);
    assert_eq!(d.stats().timers, 0);
}

#[test]
fn query_scan_limit() {
    let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
    let t = tenant("acme");
    d.upsert_webhook(T0, t.clone(), wh("w1"), spec(&["*"]))
        .unwrap();
    let total = QUERY_SCAN_MAX + 10;
    for i in 0..total {
        d.accept_event(T0, &t, event(&format!("e{i}"), "a.b"))
            .unwrap();
    }
    let mut query = DeliveryQuery::tenant(t.clone());
    query.event = Some(EventId::parse(&format!("e{}", total - 1)).unwrap());
    let first = d.deliveries(&query);
    assert!(first.items.is_empty());
    let after = first.next_after.expect("the scan stopped early");
    query.after = Some(after);
    let second = d.deliveries(&query);
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].event_id.as_str(), format!("e{}", total - 1));
    assert_eq!(second.next_after, None);
}

#[test]
fn a_full_shard_gives_the_callers_event_back() {
    let config = DispatcherConfig {
        pending_deliveries_max: 1,
        ..DispatcherConfig::default()
    };
    let mut drv = one_webhook(config, spec(&["*"]));
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    let mut keyed = event("e1", "a.b");
    keyed.idempotency = Some(Idempotency {
        key: "order-1".into(),
        fingerprint: [7; 16],
    });
    // Publish: the event (its key included) comes back; nothing was recorded for it.
    let refused = drv.d.accept_event(T0, &t, keyed.clone()).unwrap_err();
    assert_eq!(refused.clone().into_event(), Some(keyed.clone()));
    assert!(refused.to_string().contains("at most 1"), "{refused}");
    drv.step();
    let accepted: Vec<&str> = drv
        .records
        .iter()
        .filter_map(|r| match r {
            Record::EventAccepted(e) => Some(e.event_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(accepted, ["e0"]);
    // An invalid event is the caller's error even on a full shard: nothing to retry.
    let mut invalid = event("e2", "a.b");
    invalid.data = b"{".to_vec();
    let error = drv.d.accept_event(T0, &t, invalid).unwrap_err();
    assert!(matches!(error, AcceptError::Envelope(_)), "{error}");
    assert_eq!(error.into_event(), None);
    // A test send of the caller's event gives it back too.
    match drv.d.send_test_event_with(T0, &t, &wh("w1"), keyed.clone()) {
        Err(OpError::Accept(error)) => assert_eq!(error.into_event(), Some(keyed)),
        other => panic!("expected a full shard, got {other:?}"),
    }
    // A test event the dispatcher makes up, or a retry, has nothing to give back.
    let full = ShardFull {
        pending: 1,
        needed: 1,
        max: 1,
    };
    assert_eq!(
        drv.d
            .send_test_event(T0, &t, &wh("w1"), EventType::parse("ping").unwrap()),
        Err(OpError::Full(full))
    );
}

#[test]
fn a_tenant_at_its_pending_limit_is_refused_while_others_publish() {
    let config = DispatcherConfig {
        pending_deliveries_max: 100,
        pending_deliveries_per_tenant_max: 3,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config.clone());
    let (acme, other) = (tenant("acme"), tenant("other"));
    let short = spec_retrying(&["*"], vec![]);
    drv.d
        .upsert_webhook(T0, acme.clone(), wh("w1"), short.clone())
        .unwrap();
    drv.d
        .upsert_webhook(T0, acme.clone(), wh("w2"), short)
        .unwrap();
    drv.d
        .upsert_webhook(T0, other.clone(), wh("w1"), spec(&["*"]))
        .unwrap();
    // Two deliveries per event of acme's: 2 fit, 2 more do not (3 at most).
    drv.d.accept_event(T0, &acme, event("e0", "a.b")).unwrap();
    let refused = drv
        .d
        .accept_event(T0, &acme, event("e1", "a.b"))
        .unwrap_err();
    assert_eq!(
        refused,
        AcceptError::TenantFull {
            full: TenantFull {
                pending: 2,
                needed: 2,
                max: 3
            },
            event: Box::new(event("e1", "a.b")),
        }
    );
    assert!(refused.to_string().contains("receivers must catch up"));
    assert_eq!(refused.into_event(), Some(event("e1", "a.b")));
    // Another tenant of the shard is not held back (it has a limit of its own).
    for n in 0..3 {
        drv.d
            .accept_event(T0, &other, event(&format!("o{n}"), "a.b"))
            .unwrap();
    }
    // An event no webhook matches only reaches the stream: accepted.
    drv.d
        .upsert_webhook(T0, acme.clone(), wh("w2"), spec(&["only.this"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, acme.clone(), wh("w1"), spec(&["only.this"]))
        .unwrap();
    drv.d.accept_event(T0, &acme, event("e2", "a.b")).unwrap();
    // Once acme's deliveries end, it has room again; a manual retry needs room too.
    let sent = drv.step();
    let acme_sends: Vec<_> = sent.iter().filter(|r| r.tenant == acme).cloned().collect();
    assert_eq!(acme_sends.len(), 2);
    for r in &acme_sends {
        assert!(drv.reply(r, status(500)));
    }
    drv.step();
    for r in &acme_sends {
        let d = drv.d.delivery(&acme, r.delivery).unwrap();
        assert_eq!(d.status, DeliveryStatus::Exhausted);
    }
    let wide = spec_retrying(&["*"], vec![HOUR]);
    drv.d
        .upsert_webhook(T0, acme.clone(), wh("w1"), wide.clone())
        .unwrap();
    drv.d
        .upsert_webhook(T0, acme.clone(), wh("w2"), wide)
        .unwrap();
    drv.d.accept_event(T0, &acme, event("e3", "a.b")).unwrap();
    drv.step();
    // Two pending: one retry fits, the second does not.
    drv.d
        .retry_delivery(T0, &acme, acme_sends[0].delivery)
        .unwrap();
    assert_eq!(
        drv.d.retry_delivery(T0, &acme, acme_sends[1].delivery),
        Err(OpError::TenantFull(TenantFull {
            pending: 3,
            needed: 1,
            max: 3
        }))
    );
    assert_eq!(
        drv.d.resend_failed(T0, &acme, &wh("w2"), 0),
        Ok(0),
        "no room for a re-send either"
    );
    drv.step();
    // Replay rebuilds the same counts (the recount checks them per tenant).
    let replayed = replayed_like(config, &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
}

#[test]
fn limits() {
    // Webhooks per tenant.
    let config = DispatcherConfig {
        webhooks_per_tenant_max: 2,
        pending_deliveries_max: 3,
        sends_per_tick_max: 2,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config);
    let t = tenant("acme");
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w1"), spec(&["*"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w2"), spec(&["*"]))
        .unwrap();
    assert_eq!(
        drv.d.upsert_webhook(T0, t.clone(), wh("w3"), spec(&["*"])),
        Err(RegistryError::TooManyWebhooks { max: 2 })
    );
    // Replacing an existing one is fine; another tenant has its own budget.
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w2"), spec(&["a.*"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, tenant("b"), wh("w3"), spec(&["*"]))
        .unwrap();
    // Pending deliveries: 2 + 1 fit, the next is refused whole.
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    drv.d
        .accept_event(T0, &tenant("b"), event("e1", "a.b"))
        .unwrap();
    let refused = drv.d.accept_event(T0, &t, event("e2", "a.b")).unwrap_err();
    assert!(matches!(
        &refused,
        AcceptError::Full {
            full: ShardFull {
                pending: 3,
                needed: 2,
                max: 3
            },
            ..
        }
    ));
    // The refused event comes back unchanged, ready to publish again.
    assert_eq!(refused.into_event(), Some(event("e2", "a.b")));
    // Sends per tick: 3 due, 2 per tick.
    drv.d.tick(T0);
    let mut cmds = Vec::new();
    drv.d.drain_commands(&mut cmds);
    for c in &cmds {
        if let Command::Append { id, .. } = c {
            drv.d.records_durable(*id);
        }
    }
    drv.d.tick(T0);
    cmds.clear();
    drv.d.drain_commands(&mut cmds);
    let sends = cmds
        .iter()
        .filter(|c| matches!(c, Command::Send(_)))
        .count();
    assert_eq!(sends, 2);
    assert_eq!(
        drv.d.next_deadline_ms(),
        Some(T0),
        "leftover work is due now"
    );
    drv.d.tick(T0);
    cmds.clear();
    drv.d.drain_commands(&mut cmds);
    assert_eq!(
        cmds.iter()
            .filter(|c| matches!(c, Command::Send(_)))
            .count(),
        1
    );
    // Response bodies are truncated.
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    let req = drv.step().remove(0);
    drv.d.attempt_finished(
        T0,
        Outcome {
            delivery: req.delivery,
            attempt: 1,
            result: status(200),
            latency_ms: 1,
            response_body: vec![b'x'; RESPONSE_BODY_BYTES_MAX + 100],
            response_headers: ResponseHeaders::new(),
        },
    );
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.response_body.len(), RESPONSE_BODY_BYTES_MAX);
}

#[test]
fn response_headers_are_bounded() {
    let raw = |headers: &[(String, String)]| -> Vec<(String, String)> {
        ResponseHeaders::bounded(headers.iter().map(|(n, v)| (n, v))).to_pairs()
    };
    // Names are lower-cased; order is kept; values that are not UTF-8 are replaced.
    let kept = ResponseHeaders::bounded([
        ("Content-Type", &b"text/plain"[..]),
        ("X-Odd", &b"a\xffb"[..]),
        ("X-Empty", &b""[..]),
    ]);
    assert_eq!(
        kept.to_pairs(),
        [
            ("content-type".to_string(), "text/plain".to_string()),
            ("x-odd".to_string(), "a\u{fffd}b".to_string()),
            ("x-empty".to_string(), String::new()),
        ]
    );
    assert_eq!((kept.len(), kept.is_empty()), (3, false));
    assert_eq!(kept.get("CONTENT-type"), Some("text/plain"));
    assert_eq!(kept.get("x-empty"), Some(""));
    assert_eq!(kept.get("missing"), None);
    assert!(ResponseHeaders::new().is_empty());
    // Names only in Debug: a receiver's header values may be credentials.
    let debug = format!("{kept:?}");
    assert!(
        debug.contains("content-type") && !debug.contains("text/plain"),
        "{debug}"
    );
    // At most RESPONSE_HEADERS_MAX headers, the first ones.
    let many: Vec<(String, String)> = (0..RESPONSE_HEADERS_MAX + 5)
        .map(|i| (format!("X-H{i}"), "v".to_string()))
        .collect();
    let kept = raw(&many);
    assert_eq!(kept.len(), RESPONSE_HEADERS_MAX);
    assert_eq!(kept[0].0, "x-h0");
    assert_eq!(
        kept[RESPONSE_HEADERS_MAX - 1].0,
        format!("x-h{}", RESPONSE_HEADERS_MAX - 1)
    );
    // At most RESPONSE_HEADER_BYTES_MAX bytes: a header that would cross it is left
    // out, and a smaller one after it still fits.
    let big = "v".repeat(RESPONSE_HEADER_BYTES_MAX - 10);
    let headers = vec![
        ("a".to_string(), big.clone()),
        ("b".to_string(), "w".repeat(20)),
        ("c".to_string(), "x".to_string()),
    ];
    let kept = raw(&headers);
    assert_eq!(
        kept,
        [("a".to_string(), big), ("c".to_string(), "x".to_string())]
    );
    assert!(
        kept.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() <= RESPONSE_HEADER_BYTES_MAX
    );
    // The whole budget in one header, and a value whose replacement characters make it
    // longer than its bytes: the text buffer grows past its first size.
    let whole = "w".repeat(RESPONSE_HEADER_BYTES_MAX - 1);
    assert_eq!(
        raw(&[("z".to_string(), whole.clone())]),
        [("z".to_string(), whole)]
    );
    let odd = ResponseHeaders::bounded([("x", &[0xff_u8; 40][..])]);
    assert_eq!(odd.get("x"), Some("\u{fffd}".repeat(40).as_str()));
    // Bounding twice changes nothing.
    assert_eq!(raw(&kept), kept);
    assert_eq!(raw(&raw(&many)), raw(&many));

    // The dispatcher bounds what a driver reports.
    let t = tenant("acme");
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    let req = drv.step().remove(0);
    drv.d.attempt_finished(
        T0,
        Outcome {
            delivery: req.delivery,
            attempt: 1,
            result: status(200),
            latency_ms: 1,
            response_body: Vec::new(),
            response_headers: ResponseHeaders::bounded(many.iter().map(|(n, v)| (n, v))),
        },
    );
    let rec = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(rec.response_headers.to_vec(), raw(&many));
}

#[test]
fn response_headers_survive_replay_and_checkpoints() {
    let t = tenant("acme");
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    let mut ids = Vec::new();
    for (i, code) in [200, 500].into_iter().enumerate() {
        drv.d
            .accept_event(T0, &t, event(&format!("e{i}"), "a.b"))
            .unwrap();
        let req = drv.step().remove(0);
        drv.reply(&req, status(code));
        ids.push(req.delivery);
    }
    drv.step();
    let headers = |d: &Dispatcher, id: DeliveryId| d.delivery(&t, id).unwrap().response_headers;
    for &id in &ids {
        assert_eq!(
            headers(&drv.d, id).to_vec(),
            [
                ("content-type".to_string(), "text/plain".to_string()),
                ("x-request-id".to_string(), format!("r{}-1", id.0)),
            ]
        );
    }
    // Full replay of the journal records (encoded and decoded as on disk).
    let mut fresh = Dispatcher::new(DispatcherConfig::default(), T0);
    for record in &drv.records {
        let (kind, version, payload) = record.encode().unwrap();
        fresh
            .replay(&Record::decode(kind, version, &payload).unwrap())
            .unwrap();
    }
    // From a checkpoint (encoded and decoded as on disk).
    let (_, _, payload) = drv.d.checkpoint(drv.now).encode().unwrap();
    let mut from_cp = Dispatcher::new(DispatcherConfig::default(), T0);
    from_cp
        .replay(&Record::decode_checkpoint(&payload).unwrap())
        .unwrap();
    for &id in &ids {
        assert_eq!(headers(&fresh, id), headers(&drv.d, id));
        assert_eq!(headers(&from_cp, id), headers(&drv.d, id));
    }
}

#[test]
fn tick_budget_is_shared_round_robin() {
    let config = DispatcherConfig {
        sends_per_tick_max: 3,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config);
    let t = tenant("acme");
    for w in ["a", "b", "c"] {
        let mut s = spec(&["*"]);
        s.limits.in_flight_max = 100;
        drv.d.upsert_webhook(T0, t.clone(), wh(w), s).unwrap();
    }
    for i in 0..10 {
        let accepted = drv
            .d
            .accept_event(T0, &t, event(&format!("e{i}"), "x.y"))
            .unwrap();
        drv.d.records_durable(accepted.append);
    }
    let mut served: Vec<String> = Vec::new();
    for _ in 0..4 {
        drv.d.tick(T0);
        let mut cmds = Vec::new();
        drv.d.drain_commands(&mut cmds);
        for c in cmds {
            if let Command::Send(req) = c {
                served.push(req.webhook.to_string());
            }
        }
    }
    // Each tick's budget goes to the next webhook in turn, not to "a" alone.
    assert_eq!(
        served,
        ["a", "a", "a", "b", "b", "b", "c", "c", "c", "a", "a", "a"],
    );
}

#[test]
fn dispatcher_can_move_to_its_shard_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let d = Dispatcher::new(DispatcherConfig::default(), T0);
    assert_send(&d);
    let cmd = Command::Append {
        id: AppendId(1),
        record: d.checkpoint(T0),
    };
    assert_send(&cmd);
}

#[test]
fn operational_event_type_is_valid() {
    assert!(EventType::parse(WEBHOOK_DISABLED_EVENT).is_ok());
    assert!(serde_json::from_slice::<serde_json::Value>(TEST_EVENT_DATA).is_ok());
}

/// A scenario mixing every input; returns the driver.
fn scenario(config: DispatcherConfig, steps: usize) -> Driver {
    let mut drv = Driver::new(config);
    let t = tenant("acme");
    let flaky = spec_retrying(&["order.*"], vec![1_000, 2_000, 4_000]);
    drv.d
        .upsert_webhook(T0, t.clone(), wh("flaky"), flaky)
        .unwrap();
    drv.d
        .upsert_webhook(T0, t.clone(), wh("ok"), spec(&["*"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, t.clone(), wh("gone"), spec(&["order.created"]))
        .unwrap();
    drv.d
        .upsert_webhook(T0, tenant("b"), wh("ok"), spec(&["*"]))
        .unwrap();
    let mut in_flight: Vec<SendRequest> = Vec::new();
    for i in 0..steps {
        drv.now += 700;
        let ty = ["order.created", "order.paid", "user.signed_up"][i % 3];
        let tn = if i % 4 == 0 { tenant("b") } else { t.clone() };
        drv.d
            .accept_event(drv.now, &tn, event(&format!("e{i}"), ty))
            .unwrap();
        in_flight.extend(drv.step());
        // Answer about half of what is in flight, oldest first.
        let n = in_flight.len().div_ceil(2);
        for req in in_flight.drain(..n).collect::<Vec<_>>() {
            let result = match req.webhook.as_str() {
                "flaky" if req.attempt < 3 => status(503),
                "gone" => status(410),
                _ => status(200),
            };
            drv.reply(&req, result);
        }
        if i == steps / 2 {
            drv.d
                .delete_webhook(drv.now, &tenant("b"), &wh("ok"))
                .unwrap();
        }
    }
    drv.step();
    drv
}

#[test]
fn same_inputs_same_outputs() {
    let a = scenario(DispatcherConfig::default(), 40);
    let b = scenario(DispatcherConfig::default(), 40);
    assert_eq!(format!("{:?}", a.records), format!("{:?}", b.records));
    type Wire = (DeliveryId, u32, herald_http::HeaderFields, Vec<u8>);
    let full = |sent: &[SendRequest]| -> Vec<Wire> {
        sent.iter()
            .map(|r| (r.delivery, r.attempt, r.headers.clone(), r.body.to_vec()))
            .collect()
    };
    assert_eq!(full(&a.sent), full(&b.sent));
    assert!(a.sent.len() > 40);
}

/// `records` replayed, plus the attempts `live` has in flight (which have no record): the
/// state `live` holds, if replay is faithful.
fn replayed_like(config: DispatcherConfig, records: &[Record], live: &Dispatcher) -> Dispatcher {
    let mut d = Dispatcher::new(config, T0);
    for record in records {
        d.replay(record).unwrap();
    }
    mark_like(&mut d, live);
    d
}

/// Marks in `replayed` the attempts that `live` has in flight.
fn mark_like(replayed: &mut Dispatcher, live: &Dispatcher) {
    for (delivery, attempt, at) in live.in_flight_marks() {
        replayed.mark_in_flight(delivery, attempt, at).unwrap();
    }
}

/// The dispatcher's state, without the clock (a live dispatcher has ticked past its last
/// record).
fn snapshot(d: &Dispatcher) -> Record {
    match d.checkpoint(0) {
        Record::Checkpoint(c) => Record::Checkpoint(record::Checkpoint { at_ms: 0, ..c }),
        other => other,
    }
}

/// Compares two values by their debug text, showing only where they first differ.
fn assert_same<T: std::fmt::Debug>(left: &T, right: &T) {
    let (a, b) = (format!("{left:?}"), format!("{right:?}"));
    if a != b {
        let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let from = at.saturating_sub(300);
        panic!(
            "differ at byte {at}:\n left: …{}…\nright: …{}…",
            &a[from..(at + 200).min(a.len())],
            &b[from..(at + 200).min(b.len())]
        );
    }
}

#[test]
fn replay_rebuilds_state() {
    let drv = scenario(DispatcherConfig::default(), 40);
    assert!(
        drv.d.stats().in_flight > 0,
        "the scenario ends with attempts in flight"
    );
    let fresh = replayed_like(DispatcherConfig::default(), &drv.records, &drv.d);
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
    assert_eq!(fresh.stats(), drv.d.stats());
    // The log answers the same.
    let q = DeliveryQuery {
        limit: PAGE_ITEMS_MAX,
        ..DeliveryQuery::tenant(tenant("acme"))
    };
    assert_eq!(fresh.deliveries(&q), drv.d.deliveries(&q));
}

#[test]
fn replay_from_checkpoint_matches_full_replay() {
    let mut drv = scenario(DispatcherConfig::default(), 20);
    let checkpoint = drv.d.checkpoint(drv.now);
    let (kind, version, payload) = checkpoint.encode().unwrap();
    let checkpoint = Record::decode(kind, version, &payload).unwrap();
    let before = drv.records.len();
    // More activity after the checkpoint.
    let t = tenant("acme");
    for i in 0..10 {
        drv.now += 1_000;
        drv.d
            .accept_event(drv.now, &t, event(&format!("x{i}"), "order.created"))
            .unwrap();
        for req in drv.step() {
            drv.reply(&req, status(if i % 2 == 0 { 200 } else { 500 }));
        }
    }
    drv.step();
    let mut fresh = Dispatcher::new(DispatcherConfig::default(), T0);
    fresh.replay(&checkpoint).unwrap();
    for record in &drv.records[before..] {
        fresh.replay(record).unwrap();
    }
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
}

/// Deliveries already due when a checkpoint was written (here: waiting for the
/// endpoint's in-flight cap) are restored into their webhook's queue, not the wheel, and
/// are sent as they would have been.
#[test]
fn due_deliveries_are_restored_into_their_queue() {
    let mut drv = capped_with_five_events(1);
    let sent = drv.step();
    assert_eq!(sent.len(), 1);
    // The first fails: its retry is due later, in the wheel; the next one goes out.
    drv.reply(&sent[0], status(500));
    assert_eq!(drv.step().len(), 1);
    let checkpoint = drv.d.checkpoint(drv.now);
    let mut fresh = Dispatcher::new(DispatcherConfig::default(), T0);
    fresh.replay(&checkpoint).unwrap();
    let waiting = |d: &Dispatcher| {
        d.deliveries
            .values()
            .filter(|d| d.stage == Stage::Waiting)
            .count()
    };
    assert_eq!(waiting(&drv.d), 3, "three behind the cap");
    assert_eq!(waiting(&fresh), 3, "restored straight into the queue");
    assert_eq!(
        fresh.wheel.len(),
        1,
        "only the retry due later is in the wheel"
    );
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
    // Once the attempt in flight ends, the queue goes on in order.
    assert!(fresh.attempt_finished(
        drv.now,
        Outcome {
            delivery: DeliveryId(2),
            attempt: 1,
            result: status(200),
            latency_ms: 1,
            response_body: Vec::new(),
            response_headers: ResponseHeaders::new(),
        },
    ));
    fresh.tick(drv.now);
    let mut sends = Vec::new();
    while let Some(command) = fresh.pop_command() {
        if let Command::Send(request) = command {
            sends.push(request.delivery);
        }
    }
    assert_eq!(
        sends,
        vec![DeliveryId(3)],
        "the oldest waiting one, within the cap"
    );
}

/// A checkpoint in parts (any target size, down to one item per part) replays to the
/// same state as the whole journal; each part stays near its target and encodes within
/// one journal frame.
#[test]
fn checkpoint_parts_replay_like_one_checkpoint() {
    let mut drv = scenario(DispatcherConfig::default(), 60);
    drv.step();
    let whole = drv.d.checkpoint(drv.now);
    let whole_bytes = whole.encode().unwrap().2.len();
    let mut from_whole = Dispatcher::new(DispatcherConfig::default(), T0);
    from_whole.replay(&whole).unwrap();
    for target in [1, 600, 4096, whole_bytes / 3, usize::MAX] {
        let parts: Vec<Record> = drv.d.checkpoint_parts(drv.now, target).collect();
        assert!(!parts.is_empty());
        let mut fresh = Dispatcher::new(DispatcherConfig::default(), T0);
        for (i, part) in parts.iter().enumerate() {
            let Record::Checkpoint(c) = part else {
                panic!("part {i} is not a checkpoint")
            };
            assert_eq!(c.part as usize, i, "parts are numbered in order");
            let (_, _, payload) = part.encode().unwrap();
            let items = c.webhooks.len() + c.events.len() + c.idempotency.len();
            // The estimate is generous: a part of several items stays under twice its
            // target (one item alone may exceed it; an event's deliveries count as one).
            assert!(
                items <= 1 || payload.len() <= target.saturating_mul(2),
                "part {i} of target {target}: {} bytes, {items} items",
                payload.len()
            );
            fresh
                .replay(&Record::decode_checkpoint(&payload).unwrap())
                .unwrap();
        }
        if target == usize::MAX {
            assert_eq!(parts.len(), 1);
        } else if target == 1 {
            // One item per part: a webhook, a key, or one event with its deliveries.
            for part in &parts {
                let Record::Checkpoint(c) = part else {
                    unreachable!()
                };
                assert_eq!(
                    c.webhooks.len() + c.events.len() + c.idempotency.len(),
                    1,
                    "{c:?}"
                );
            }
        }
        assert_same(&snapshot(&fresh), &snapshot(&drv.d));
        assert_eq!(fresh.stats(), from_whole.stats(), "target {target}");
    }
}

/// A checkpoint written a part at a time with input between its parts (answers to the
/// attempts in flight when it began, new events and their outcomes, finished deliveries
/// leaving a short log) holds the state as it was when it began: its parts alone replay
/// to that state, and with the records journaled after it began, to the live state.
#[test]
fn a_checkpoint_built_between_inputs_holds_the_state_it_began_with() {
    for (target, log_finished_max) in [
        (1, 12),
        (600, 12),
        (4096, 12),
        (1, LOG_FINISHED_MAX_DEFAULT),
        (600, LOG_FINISHED_MAX_DEFAULT),
    ] {
        let config = DispatcherConfig {
            log_finished_max,
            ..DispatcherConfig::default()
        };
        let mut drv = scenario(config.clone(), 40);
        drv.step();
        let covers = drv.records.len();
        let at_begin = snapshot(&drv.d);
        let stats_at_begin = drv.d.stats();
        let mut in_flight = drv.d.in_flight_marks();
        assert!(
            !in_flight.is_empty(),
            "the scenario ends with attempts in flight"
        );
        let mut checkpoint = drv.d.begin_checkpoint(drv.now, target);
        let mut parts = Vec::new();
        let mut copies_max = 0;
        let t = tenant("acme");
        let mut turn = 0;
        while let Some(part) = drv.d.checkpoint_part(&mut checkpoint, &Held) {
            let (kind, version, payload) = part.encode().unwrap();
            parts.push(Record::decode(kind, version, &payload).unwrap());
            if !checkpoint.registry_written() {
                continue;
            }
            turn += 1;
            drv.now += 700;
            // Answer one attempt that was in flight when the checkpoint began.
            if let Some((delivery, attempt, _)) = in_flight.pop() {
                drv.answer(delivery, attempt);
            }
            drv.d
                .accept_event(drv.now, &t, event(&format!("late{turn}"), "order.created"))
                .unwrap();
            for req in drv.step() {
                drv.reply(&req, status(if turn % 3 == 0 { 500 } else { 200 }));
            }
            drv.step();
            copies_max = copies_max.max(drv.d.checkpoint_copies());
        }
        assert!(checkpoint.is_done());
        assert!(turn > 1, "target {target}: input came between parts");
        assert!(
            copies_max > 0,
            "target {target}: deliveries not yet written changed (or left the log)"
        );
        drv.d.finish_checkpoint(checkpoint);
        assert_eq!(
            drv.d.checkpoint_copies(),
            0,
            "the copies go with the checkpoint"
        );
        drv.step();
        // The parts alone: the state when the checkpoint began.
        let mut fresh = Dispatcher::new(config.clone(), T0);
        for part in &parts {
            fresh.replay(part).unwrap();
        }
        assert_same(&snapshot(&fresh), &at_begin);
        assert_eq!(fresh.stats(), stats_at_begin, "target {target}");
        // Then the records journaled since it began: the live state.
        for record in &drv.records[covers..] {
            fresh.replay(record).unwrap();
        }
        assert_same(&snapshot(&fresh), &snapshot(&drv.d));
        assert_eq!(fresh.stats(), drv.d.stats(), "target {target}");
    }
}

/// Input that reaches the registry (a webhook changed) before a checkpoint's webhooks and
/// keys are written is a driver bug: the checkpoint stops it rather than write a
/// registry of no single moment.
#[test]
#[should_panic(expected = "before a checkpoint's webhooks and keys were written")]
fn a_checkpoint_refuses_records_before_its_registry_is_written() {
    let mut drv = scenario(DispatcherConfig::default(), 4);
    drv.step();
    let mut checkpoint = drv.d.begin_checkpoint(drv.now, 1);
    let _first = drv.d.checkpoint_part(&mut checkpoint, &Held);
    assert!(!checkpoint.registry_written());
    drv.d
        .upsert_webhook(drv.now, tenant("acme"), wh("late"), spec(&["*"]))
        .unwrap();
    drv.step();
    let _ = drv.d.checkpoint_part(&mut checkpoint, &Held);
}

/// An abandoned checkpoint lets go of its copies, and the next one starts over.
#[test]
fn an_abandoned_checkpoint_lets_go_of_its_copies() {
    let mut drv = scenario(DispatcherConfig::default(), 20);
    drv.step();
    let mut checkpoint = drv.d.begin_checkpoint(drv.now, 1);
    while !checkpoint.registry_written() {
        drv.d.checkpoint_part(&mut checkpoint, &Held).unwrap();
    }
    for (delivery, attempt, _) in drv.d.in_flight_marks() {
        drv.answer(delivery, attempt);
    }
    drv.step();
    assert!(drv.d.checkpoint_copies() > 0);
    drv.d.abandon_checkpoint(checkpoint);
    assert_eq!(drv.d.checkpoint_copies(), 0);
    // A whole checkpoint now sees the live state.
    let mut fresh = Dispatcher::new(DispatcherConfig::default(), T0);
    fresh.replay(&drv.d.checkpoint(drv.now)).unwrap();
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
}

/// One event fanned out to many webhooks whose kept responses alone pass twice a part's
/// target continues over several parts (no part grows without bound), and replay still
/// shares one copy of the event among its deliveries.
#[test]
fn an_events_deliveries_may_continue_over_parts() {
    let mut drv = Driver::new(DispatcherConfig::default());
    let t = tenant("acme");
    for i in 0..40 {
        drv.d
            .upsert_webhook(T0, t.clone(), wh(&format!("w{i}")), spec(&["*"]))
            .unwrap();
    }
    drv.step();
    drv.d.accept_event(drv.now, &t, event("e1", "a.b")).unwrap();
    drv.d.accept_event(drv.now, &t, event("e2", "a.b")).unwrap();
    let sends = drv.step();
    assert_eq!(sends.len(), 80);
    for req in &sends {
        drv.d.attempt_finished(
            drv.now,
            Outcome {
                delivery: req.delivery,
                attempt: req.attempt,
                result: status(500),
                latency_ms: 7,
                response_body: vec![b'x'; 4096],
                response_headers: ResponseHeaders::new(),
            },
        );
    }
    drv.step();
    let target = 8 * 1024;
    let parts: Vec<Record> = drv.d.checkpoint_parts(drv.now, target).collect();
    let mut fresh = Dispatcher::new(DispatcherConfig::default(), T0);
    let mut parts_with_e1 = 0;
    for part in &parts {
        let Record::Checkpoint(c) = part else {
            panic!("not a checkpoint")
        };
        parts_with_e1 += c.events.iter().filter(|e| e.event_id == "e1").count();
        let (_, _, payload) = part.encode().unwrap();
        // Twice the target to split, plus one delivery with its response.
        assert!(
            payload.len() <= 3 * target + 4096,
            "part {}: {} bytes",
            c.part,
            payload.len()
        );
        fresh
            .replay(&Record::decode_checkpoint(&payload).unwrap())
            .unwrap();
    }
    assert!(parts_with_e1 > 1, "e1's deliveries continue over parts");
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
    for id in ["e1", "e2"] {
        let copies: Vec<&Arc<EventData>> = fresh
            .deliveries
            .values()
            .map(|d| &d.event)
            .filter(|e| e.id.as_str() == id)
            .collect();
        assert_eq!(copies.len(), 40);
        assert!(
            copies.iter().all(|e| Arc::ptr_eq(e, copies[0])),
            "{id}: one copy shared by its deliveries"
        );
    }
}

#[test]
fn checkpoints_keep_bodies_only_where_needed() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    let t = tenant("acme");
    for (i, code) in [200, 400, 500].into_iter().enumerate() {
        drv.d
            .accept_event(T0, &t, event(&format!("e{i}"), "a.b"))
            .unwrap();
        let req = drv.step().remove(0);
        drv.reply(&req, status(code));
    }
    let Record::Checkpoint(c) = drv.d.checkpoint(drv.now) else {
        unreachable!()
    };
    let bodies: Vec<(&str, bool)> = c
        .events
        .iter()
        .map(|e| (e.event_id.as_str(), !e.body.is_empty()))
        .collect();
    // Succeeded: dropped; failed (final) and pending (retrying): kept.
    assert_eq!(bodies, [("e0", false), ("e1", true), ("e2", true)]);
}

#[test]
fn crash_retries_in_flight_attempts_with_same_number() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(T0, &tenant("acme"), event("e0", "a.b"))
        .unwrap();
    let req = drv.step().remove(0);
    // Crash: the outcome never arrives.
    let mut fresh = Driver::new(DispatcherConfig::default());
    for record in &drv.records {
        fresh.d.replay(record).unwrap();
    }
    fresh.now = T0 + 5_000;
    fresh.d.replay_finished(fresh.now);
    let again = fresh.step();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].delivery, again[0].attempt), (req.delivery, 1));
    assert_eq!(again[0].body, req.body);
    // New deliveries get new ids after replay.
    fresh
        .d
        .accept_event(fresh.now, &tenant("acme"), event("e1", "a.b"))
        .unwrap();
    let next = fresh.step().remove(0);
    assert!(next.delivery > req.delivery);
}

#[test]
fn replay_after_partial_disable_ends_orphans() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(T0, &tenant("acme"), event("e0", "a.b"))
        .unwrap();
    drv.d
        .accept_event(T0, &tenant("acme"), event("e1", "a.b"))
        .unwrap();
    let sent = drv.step();
    drv.reply(&sent[0], status(410));
    drv.step();
    // Keep records up to the disabling upsert only: the DeliveryFinished of the other
    // delivery was lost in the crash.
    let cut = drv
        .records
        .iter()
        .position(
            |r| matches!(r, Record::WebhookUpserted(u) if u.webhook.disabled_reason.is_some()),
        )
        .unwrap();
    let mut fresh = Driver::new(DispatcherConfig::default());
    for record in &drv.records[..=cut] {
        fresh.d.replay(record).unwrap();
    }
    fresh.d.replay_finished(T0);
    fresh.step();
    assert_eq!(fresh.d.stats().pending_deliveries, 0);
    let rec = fresh.d.delivery(&tenant("acme"), sent[1].delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Failed);
    assert_eq!(rec.error, Some(DeliveryError::WebhookDisabled));
}

/// A change of settings read before the dispatcher disabled the webhook (a 410) keeps it
/// disabled; a whole update writes the status it carries.
#[test]
fn a_change_of_settings_keeps_a_status_changed_since() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    let read = drv
        .d
        .webhook(&tenant("acme"), &wh("w1"))
        .unwrap()
        .spec
        .clone();
    assert!(read.status.is_active());
    drv.d
        .accept_event(T0, &tenant("acme"), event("e0", "a.b"))
        .unwrap();
    let req = drv.step().remove(0);
    drv.reply(&req, status(410));
    drv.step();
    let mut changed = read.clone();
    changed.filters = spec(&["order.*"]).filters;
    drv.d
        .update_webhook_settings(drv.now, tenant("acme"), wh("w1"), changed.clone())
        .unwrap();
    drv.step();
    let now = drv
        .d
        .webhook(&tenant("acme"), &wh("w1"))
        .unwrap()
        .spec
        .clone();
    assert_eq!(
        now.status,
        WebhookStatus::Disabled {
            reason: DisableReason::Gone,
            at_ms: T0
        }
    );
    assert_eq!(now.filters, changed.filters, "the settings are written");
    // A replayed journal agrees.
    let fresh = replayed_like(DispatcherConfig::default(), &drv.records, &drv.d);
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
    // An unknown webhook is refused, not created.
    assert!(matches!(
        drv.d
            .update_webhook_settings(drv.now, tenant("acme"), wh("w2"), changed.clone()),
        Err(RegistryError::NotFound { .. })
    ));
    // The whole update writes what it carries.
    drv.d
        .update_webhook(drv.now, tenant("acme"), wh("w1"), changed)
        .unwrap();
    let view = drv.d.webhook(&tenant("acme"), &wh("w1")).unwrap();
    assert!(view.spec.status.is_active());
}

#[test]
fn reenabling_resets_health() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(T0, &tenant("acme"), event("e0", "a.b"))
        .unwrap();
    let req = drv.step().remove(0);
    drv.reply(&req, status(410));
    drv.step();
    let mut s = drv
        .d
        .webhook(&tenant("acme"), &wh("w1"))
        .unwrap()
        .spec
        .clone();
    assert!(!s.status.is_active());
    s.status = WebhookStatus::Active;
    drv.d
        .upsert_webhook(drv.now, tenant("acme"), wh("w1"), s)
        .unwrap();
    let view = drv.d.webhook(&tenant("acme"), &wh("w1")).unwrap();
    assert_eq!(view.health.in_flight, 0);
    assert_eq!(view.health.breaker, Breaker::Closed);
    drv.d
        .accept_event(drv.now, &tenant("acme"), event("e1", "a.b"))
        .unwrap();
    assert_eq!(drv.step().len(), 1);
}

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Publish {
            tenant: u8,
            kind: u8,
            /// An idempotency key from a small set (so keys repeat); the fingerprint
            /// follows the kind, so a repeat is a duplicate or a conflict.
            key: Option<u8>,
        },
        Reply {
            pick: u8,
            result: u8,
        },
        /// Replies to every request in flight before the commands are polled (one
        /// driver turn): the outcomes share one record.
        ReplyAll {
            results: [u8; 4],
        },
        Advance {
            ms: u16,
        },
        Upsert {
            webhook: u8,
            filter: u8,
            disabled: bool,
        },
        Delete {
            webhook: u8,
        },
        Retry {
            pick: u8,
        },
        Resend {
            webhook: u8,
        },
        Test {
            webhook: u8,
        },
        Checkpoint,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..2, 0u8..3, proptest::option::weighted(0.5, 0u8..4))
                .prop_map(|(tenant, kind, key)| Op::Publish { tenant, kind, key }),
            6 => (any::<u8>(), 0u8..7).prop_map(|(pick, result)| Op::Reply { pick, result }),
            2 => [0u8..7, 0u8..7, 0u8..7, 0u8..7].prop_map(|results| Op::ReplyAll { results }),
            3 => (0u16..1_500).prop_map(|ms| Op::Advance { ms }),
            1 => (0u8..4, 0u8..3, proptest::bool::weighted(0.2))
                .prop_map(|(webhook, filter, disabled)| Op::Upsert { webhook, filter, disabled }),
            1 => (0u8..4).prop_map(|webhook| Op::Delete { webhook }),
            1 => any::<u8>().prop_map(|pick| Op::Retry { pick }),
            1 => (0u8..4).prop_map(|webhook| Op::Resend { webhook }),
            1 => (0u8..4).prop_map(|webhook| Op::Test { webhook }),
            1 => Just(Op::Checkpoint),
        ]
    }

    const KINDS: [&str; 3] = ["order.created", "order.paid", "user.signed_up"];
    const FILTERS: [&str; 3] = ["*", "order.*", "user.signed_up"];
    const IN_FLIGHT_MAX: u32 = 2;

    fn result(n: u8) -> AttemptResult {
        match n {
            0 | 1 => status(200),
            2 => status(500),
            3 => AttemptResult::Response {
                status: 429,
                retry_after: Some(RetryAfter::DelaySeconds(1)),
            },
            4 => status(410),
            5 => status(400),
            _ => AttemptResult::Transport(TransportError::RequestTimeout),
        }
    }

    fn config() -> DispatcherConfig {
        DispatcherConfig {
            // Short enough that keys expire within a run; small enough a bound to hit.
            idempotency_window_ms: 20_000,
            idempotency_keys_max: 3,
            // Each of the two tenants uses up to four keys: both bounds are reached.
            idempotency_keys_per_tenant_max: 2,
            // Small enough that a tenant's backlog reaches it now and then.
            pending_deliveries_per_tenant_max: 12,
            retry_schedule: RetrySchedule::new(vec![100, 200, 400]).unwrap(),
            jitter_percent: 20,
            jitter_seed: 99,
            health: HealthPolicy {
                breaker_failures: 3,
                breaker_open_ms: 300,
                breaker_open_ms_max: 1_200,
                disable_after_failing_ms: 5_000,
            },
            log_finished_max: 40,
            // Below the shard's: a tenant's share of the log is reached too.
            log_finished_per_tenant_max: 25,
            ..DispatcherConfig::default()
        }
    }

    fn webhook_spec(filter: u8, disabled: bool, now: u64) -> WebhookSpec {
        let mut s = spec(&[FILTERS[filter as usize % FILTERS.len()]]);
        s.limits.in_flight_max = IN_FLIGHT_MAX;
        if disabled {
            s.status = WebhookStatus::Disabled {
                reason: DisableReason::Manual,
                at_ms: now,
            };
        }
        s
    }

    /// What a live dispatcher held after one op: the state a replay of the journal up
    /// to there (`records`) must rebuild, and the checkpoint taken last before it.
    /// The latest checkpoint taken: the records journaled before it, and its parts.
    type Checkpointed = Option<(usize, Vec<Record>)>;

    struct Cut {
        records: usize,
        state: Record,
        stats: Stats,
        wheel: BTreeMap<DeliveryId, Option<u64>>,
        log: Page<DeliveryRecord>,
        checkpoint: Checkpointed,
        /// The attempts in flight (no record holds them).
        in_flight: Vec<(DeliveryId, u32, u64)>,
    }

    /// Everything compared between a live and a replayed dispatcher: registry, pending
    /// set, log and health (the checkpoint's view), counts, the wheel's due times and the
    /// delivery log's answer. Due deliveries wait in a ready queue live and may still sit
    /// in the wheel replayed, so the count of timers is left out (the due times are not).
    fn cut_of(d: &Dispatcher, records: usize, checkpoint: Checkpointed) -> Cut {
        Cut {
            records,
            state: snapshot(d),
            stats: Stats {
                timers: 0,
                ..d.stats()
            },
            wheel: d.wheel_view(),
            log: d.deliveries(&DeliveryQuery {
                limit: PAGE_ITEMS_MAX,
                ..DeliveryQuery::tenant(tenant("a"))
            }),
            checkpoint,
            in_flight: d.in_flight_marks(),
        }
    }

    fn assert_cut(replayed: &Dispatcher, cut: &Cut) {
        let other = cut_of(replayed, cut.records, None);
        assert_same(&other.state, &cut.state);
        assert_eq!(other.stats, cut.stats);
        assert_eq!(other.wheel, cut.wheel);
        assert_eq!(other.log, cut.log);
    }

    /// Runs the ops; returns the driver, the record index and snapshot of the last
    /// checkpoint taken, and the live state after op `cut_at`.
    fn run(ops: &[Op], cut_at: usize, slow_endings: bool) -> (Driver, Checkpointed, Option<Cut>) {
        let mut drv = if slow_endings {
            // One held delivery looked at per tick, one tick per step: a disabled or
            // deleted webhook's backlog ends over many ops, which meet it under way.
            let mut drv = Driver::new(DispatcherConfig {
                endings_per_tick_max: 1,
                ..config()
            });
            drv.ticks_per_step = 1;
            drv
        } else {
            Driver::new(config())
        };
        let tenants = [tenant("a"), tenant("b")];
        for (i, t) in tenants.iter().enumerate() {
            for w in 0..2u8 {
                drv.d
                    .upsert_webhook(
                        T0,
                        t.clone(),
                        wh(&format!("w{w}")),
                        webhook_spec(w + i as u8, false, T0),
                    )
                    .unwrap();
            }
        }
        let mut in_flight: Vec<SendRequest> = drv.step();
        let mut checkpoint = None;
        let mut cut = None;
        for (n, op) in ops.iter().enumerate() {
            let now = drv.now;
            match op {
                Op::Publish { tenant, kind, key } => {
                    let t = &tenants[*tenant as usize % 2];
                    let mut e = event(&format!("e{n}"), KINDS[*kind as usize % 3]);
                    e.idempotency = key.map(|key| Idempotency {
                        key: format!("key-{key}"),
                        fingerprint: [*kind; 16],
                    });
                    let before = drv.d.commands_len();
                    match drv.d.accept_event(now, t, e) {
                        Ok(accepted) if accepted.duplicate => {
                            // A duplicate records and sends nothing new.
                            assert_eq!(drv.d.commands_len(), before);
                            assert_eq!(accepted.deliveries, 0);
                            assert_ne!(accepted.event_id.as_str(), format!("e{n}"));
                        }
                        Ok(_) => {}
                        Err(AcceptError::IdempotencyConflict { .. }) => {
                            assert!(key.is_some());
                            assert_eq!(drv.d.commands_len(), before);
                        }
                        Err(_) => {}
                    }
                }
                Op::Reply { pick, result: r } => {
                    if !in_flight.is_empty() {
                        let req = in_flight.remove(*pick as usize % in_flight.len());
                        drv.reply(&req, result(*r));
                    }
                }
                Op::ReplyAll { results } => {
                    for (i, req) in in_flight.drain(..).enumerate() {
                        drv.reply(&req, result(results[i % results.len()]));
                    }
                }
                Op::Advance { ms } => drv.now += u64::from(*ms),
                Op::Upsert {
                    webhook,
                    filter,
                    disabled,
                } => {
                    let s = webhook_spec(*filter, *disabled, now);
                    drv.d
                        .upsert_webhook(now, tenants[0].clone(), wh(&format!("w{webhook}")), s)
                        .unwrap();
                }
                Op::Delete { webhook } => {
                    let _ = drv
                        .d
                        .delete_webhook(now, &tenants[0], &wh(&format!("w{webhook}")));
                }
                Op::Retry { pick } => {
                    let all = drv.d.deliveries(&DeliveryQuery {
                        limit: PAGE_ITEMS_MAX,
                        ..DeliveryQuery::tenant(tenants[0].clone())
                    });
                    if !all.items.is_empty() {
                        let id = all.items[*pick as usize % all.items.len()].id;
                        let _ = drv.d.retry_delivery(now, &tenants[0], id);
                    }
                }
                Op::Resend { webhook } => {
                    let _ = drv
                        .d
                        .resend_failed(now, &tenants[0], &wh(&format!("w{webhook}")), T0);
                }
                Op::Test { webhook } => {
                    let ty = EventType::parse("ping").unwrap();
                    let _ =
                        drv.d
                            .send_test_event(now, &tenants[0], &wh(&format!("w{webhook}")), ty);
                }
                Op::Checkpoint => {
                    drv.step();
                    // One item per part: every part boundary is exercised.
                    let parts = drv.d.checkpoint_parts(drv.now, 1).collect();
                    checkpoint = Some((drv.records.len(), parts));
                }
            }
            in_flight.extend(drv.step());
            // Invariants after every step.
            for t in &tenants {
                for view in drv.d.webhooks(t) {
                    assert!(view.health.in_flight <= IN_FLIGHT_MAX, "in-flight cap");
                }
            }
            let stats = drv.d.stats();
            assert_eq!(stats.retries_pending, drv.d.retries_pending_scan());
            assert!(stats.in_flight <= stats.pending_deliveries);
            assert!(stats.deliveries_retained <= stats.pending_deliveries + 40);
            if n == cut_at {
                cut = Some(cut_of(&drv.d, drv.records.len(), checkpoint.clone()));
            }
        }
        (drv, checkpoint, cut)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Replaying every record (or a checkpoint and what followed it) rebuilds the same
        /// state; tenants never see each other's events; attempts respect the budget.
        #[test]
        fn replay_is_faithful(
            ops in prop::collection::vec(op(), 1..80),
            cut in any::<prop::sample::Index>(),
        ) {
            replay_is_faithful_after(&ops, cut.index(ops.len()), false)?;
        }

        /// The same while disabled or deleted webhooks' backlogs end a delivery per tick.
        #[test]
        fn replay_is_faithful_with_endings_under_way(
            ops in prop::collection::vec(op(), 1..80),
            cut in any::<prop::sample::Index>(),
        ) {
            replay_is_faithful_after(&ops, cut.index(ops.len()), true)?;
        }
    }

    fn replay_is_faithful_after(
        ops: &[Op],
        cut_at: usize,
        slow_endings: bool,
    ) -> Result<(), TestCaseError> {
        {
            let (drv, checkpoint, cut) = run(ops, cut_at, slow_endings);
            // Live and replay share one path: the journal up to any op, replayed whole or
            // from the checkpoint before it, rebuilds what the live dispatcher held there.
            let cut = cut.expect("the cut is one of the ops");
            // Attempts in flight have no record: the journal plus the live marks of
            // those in flight is the live state.
            let mut prefix = Dispatcher::new(config(), T0);
            for record in &drv.records[..cut.records] {
                prefix.replay(record).unwrap();
            }
            for &(delivery, attempt, at) in &cut.in_flight {
                prefix.mark_in_flight(delivery, attempt, at).unwrap();
            }
            assert_cut(&prefix, &cut);
            if let Some((at, cp)) = &cut.checkpoint {
                let mut from_cp = Dispatcher::new(config(), T0);
                for part in cp {
                    from_cp.replay(part).unwrap();
                }
                for record in &drv.records[*at..cut.records] {
                    from_cp.replay(record).unwrap();
                }
                for &(delivery, attempt, at) in &cut.in_flight {
                    from_cp.mark_in_flight(delivery, attempt, at).unwrap();
                }
                assert_cut(&from_cp, &cut);
            }
            let mut fresh = Dispatcher::new(config(), T0);
            for record in &drv.records {
                fresh.replay(record).unwrap();
            }
            let mut marked = Dispatcher::new(config(), T0);
            for record in &drv.records {
                marked.replay(record).unwrap();
            }
            mark_like(&mut marked, &drv.d);
            assert_same(&snapshot(&marked), &snapshot(&drv.d));
            // Due deliveries wait in the wheel after replay and in a ready queue live: only
            // the timer count may differ.
            let without_timers = |s: Stats| Stats { timers: 0, ..s };
            prop_assert_eq!(
                without_timers(marked.stats()),
                without_timers(drv.d.stats())
            );
            if let Some((at, cp)) = checkpoint {
                let mut from_cp = Dispatcher::new(config(), T0);
                for part in &cp {
                    from_cp.replay(part).unwrap();
                }
                for record in &drv.records[at..] {
                    from_cp.replay(record).unwrap();
                }
                mark_like(&mut from_cp, &drv.d);
                assert_same(&snapshot(&from_cp), &snapshot(&drv.d));
            }
            // Recovery: attempts in flight at the "crash" (unknown to the journal) are
            // repeated with their number.
            let in_flight: BTreeMap<u64, u32> = drv
                .d
                .in_flight_marks()
                .into_iter()
                .map(|(delivery, attempt, _)| (delivery.0, attempt))
                .collect();
            let mut recovered = Driver::new(config());
            recovered.d = fresh;
            recovered.now = drv.now;
            recovered.d.replay_finished(drv.now);
            for req in recovered.step() {
                if let Some(&attempt) = in_flight.get(&req.delivery.0) {
                    prop_assert_eq!(req.attempt, attempt);
                }
            }
            for req in &drv.sent {
                let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                prop_assert_eq!(body["tenant_id"].as_str(), Some(req.tenant.as_str()));
            }
        }
        Ok(())
    }
}

#[test]
fn rate_limit_holds_after_outcomes() {
    for in_flight_max in [1, 16] {
        let mut s = spec(&["*"]);
        s.limits.rate = Some(RateLimit { per_s: 5, burst: 1 });
        s.limits.in_flight_max = in_flight_max;
        let mut drv = one_webhook(DispatcherConfig::default(), s);
        let t = tenant("acme");
        drv.now = T0 + 191;
        drv.d.accept_event(drv.now, &t, event("e0", "a.b")).unwrap();
        let first = drv.step();
        assert_eq!(first.len(), 1);
        drv.now = T0 + 308;
        drv.d.accept_event(drv.now, &t, event("e1", "a.b")).unwrap();
        assert!(drv.step().is_empty());
        drv.now = T0 + 326;
        drv.reply(&first[0], status(201));
        assert!(drv.step().is_empty(), "one token per 200 ms");
        // Due at T0 + 391, fired on the wheel's next 10 ms boundary.
        assert!(drv.advance_to(T0 + 390).is_empty());
        assert_eq!(drv.advance_to(T0 + 400).len(), 1);
    }
}

#[test]
fn update_keeps_pending_deliveries_and_applies_new_filters() {
    let s = spec_retrying(&["order.*"], vec![MIN]);
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    let t = tenant("acme");
    drv.d
        .accept_event(T0, &t, event("e0", "order.created"))
        .unwrap();
    let req = drv.step().remove(0);
    drv.reply(&req, status(500));
    drv.step();
    // Replace the spec: other filters, other URL; the pending retry survives and goes to
    // the new URL.
    let mut updated = spec(&["user.*"]);
    updated.url = Url::parse("https://new.example/hook").unwrap();
    drv.d
        .upsert_webhook(drv.now, t.clone(), wh("w1"), updated)
        .unwrap();
    assert_eq!(drv.d.webhook(&t, &wh("w1")).unwrap().pending, 1);
    let accepted = drv
        .d
        .accept_event(drv.now, &t, event("e1", "order.created"))
        .unwrap();
    assert_eq!(accepted.deliveries, 0, "old filter no longer matches");
    let accepted = drv
        .d
        .accept_event(drv.now, &t, event("e2", "user.created"))
        .unwrap();
    assert_eq!(accepted.deliveries, 1);
    let fresh = drv.step().remove(0);
    assert_eq!(fresh.url.host, "new.example");
    let retry = drv.advance_to(T0 + MIN).remove(0);
    assert_eq!((retry.delivery, retry.attempt), (req.delivery, 2));
    assert_eq!(retry.url.host, "new.example");
}

#[test]
fn gone_publishes_webhook_disabled_to_subscribers() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["order.*"]));
    let t = tenant("acme");
    drv.d
        .upsert_webhook(T0, t.clone(), wh("ops"), spec(&["webhook.disabled"]))
        .unwrap();
    drv.d
        .accept_event(T0, &t, event("e0", "order.created"))
        .unwrap();
    let req = drv.step().remove(0);
    drv.reply(&req, status(410));
    let ops = drv.step();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].webhook, wh("ops"));
    let body: serde_json::Value = serde_json::from_slice(&ops[0].body).unwrap();
    assert_eq!(body["type"], "webhook.disabled");
    assert_eq!(body["data"]["reason"], "gone");
    assert_eq!(body["data"]["url"], "https://receiver.example/hook");
    // A second 410 cannot happen (the webhook is disabled), and no event goes to it.
    let accepted = drv
        .d
        .accept_event(drv.now, &t, event("e1", "order.created"))
        .unwrap();
    assert_eq!(accepted.deliveries, 0);
    assert_eq!(
        drv.d
            .send_test_event(drv.now, &t, &wh("w1"), EventType::parse("ping").unwrap()),
        Err(OpError::WebhookDisabled(wh("w1")))
    );
}

#[test]
fn generated_event_ids_are_never_reused_even_across_replay() {
    let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
    // Neither event creates a delivery, so only the id counter separates them.
    let first = d.generated_event_id(GENERATED_EVENT_ID_PREFIXES[0]);
    let second = d.generated_event_id(GENERATED_EVENT_ID_PREFIXES[0]);
    assert_ne!(first, second);

    // A dispatcher rebuilt from records has seen both ids and must not hand them out.
    let mut rebuilt = Dispatcher::new(DispatcherConfig::default(), T0);
    rebuilt.skip_past_generated_event_id(first.as_str());
    rebuilt.skip_past_generated_event_id(second.as_str());
    rebuilt.skip_past_generated_event_id("evt_customer_ffffffffffffffff");
    let third = rebuilt.generated_event_id(GENERATED_EVENT_ID_PREFIXES[1]);
    let fourth = rebuilt.generated_event_id(GENERATED_EVENT_ID_PREFIXES[0]);
    for used in [&first, &second] {
        assert_ne!(&third, used);
        assert_ne!(&fourth, used);
    }
    assert_ne!(third, fourth);
}

#[test]
fn publisher_ids_that_look_generated_do_not_move_delivery_ids_out_of_range() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["order.*"]));
    let t = tenant("acme");
    // Ids a publisher may choose that look like generated ones, with numbers a shard
    // never reaches (the last would wrap the counter).
    for id in [
        "evt_test_8000000000000000",
        "evt_webhook_disabled_4000000000000000",
        "evt_test_ffffffffffffffff",
    ] {
        let accepted = drv
            .d
            .accept_event(drv.now, &t, event(id, "order.created"))
            .unwrap();
        assert_eq!(accepted.deliveries, 1);
        drv.step();
    }
    // A number below the bound is followed, as a generated id's must be.
    drv.d
        .accept_event(
            drv.now,
            &t,
            event("evt_test_00000000000000ff", "order.created"),
        )
        .unwrap();
    drv.d
        .accept_event(drv.now, &t, event("evt_after", "order.created"))
        .unwrap();
    let sent = drv.step();
    let after = sent.last().expect("a send").delivery;
    assert_eq!(after, DeliveryId(0x100), "{after}");

    // Replayed, the same records rebuild the same ids, and the next generated one is
    // past every id used.
    let mut rebuilt = Dispatcher::new(DispatcherConfig::default(), T0);
    for record in &drv.records {
        rebuilt.replay(record).unwrap();
    }
    let next = rebuilt.generated_event_id(GENERATED_EVENT_ID_PREFIXES[1]);
    assert_eq!(next.as_str(), "evt_test_0000000000000101");

    // A record naming a delivery id past the range is refused, not held.
    let mut bad = drv
        .records
        .iter()
        .find_map(|r| match r {
            Record::EventAccepted(a) if !a.deliveries.is_empty() => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    bad.event_id = EventId::parse("evt_bad").unwrap();
    bad.deliveries[0].delivery = 1 << 63;
    let mut fresh = Dispatcher::new(DispatcherConfig::default(), T0);
    for record in drv
        .records
        .iter()
        .take_while(|r| !matches!(r, Record::EventAccepted(_)))
    {
        fresh.replay(record).unwrap();
    }
    let refused = fresh.replay(&Record::EventAccepted(bad)).unwrap_err();
    assert!(refused.to_string().contains("past the end"), "{refused}");
}

/// Publishes `id` for `t` with idempotency key `key` and fingerprint `[fingerprint; 16]`.
fn keyed(id: &str, key: &str, fingerprint: u8) -> NewEvent {
    NewEvent {
        idempotency: Some(Idempotency {
            key: key.to_string(),
            fingerprint: [fingerprint; 16],
        }),
        ..event(id, "order.created")
    }
}

#[test]
fn idempotency_keys_answer_repeats_with_the_first_event() {
    let config = DispatcherConfig {
        idempotency_window_ms: 10 * MIN,
        ..DispatcherConfig::default()
    };
    let mut drv = one_webhook(config.clone(), spec(&["*"]));
    let t = tenant("acme");
    drv.now += 1_000;
    let first = drv
        .d
        .accept_event(drv.now, &t, keyed("e1", "k1", 1))
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!((first.deliveries, first.created_at_ms), (1, T0));
    assert_eq!(drv.step().len(), 1);
    let records = drv.records.len();

    // (event, key, fingerprint, tenant, expected)
    enum Expect {
        DuplicateOf(&'static str),
        Conflict,
        New,
        BadKey,
    }
    let long_key = "k".repeat(crate::IDEMPOTENCY_KEY_BYTES_MAX + 1);
    let max_key = "k".repeat(crate::IDEMPOTENCY_KEY_BYTES_MAX);
    let cases: Vec<(&str, &str, u8, &str, Expect)> = vec![
        ("e2", "k1", 1, "acme", Expect::DuplicateOf("e1")),
        ("e3", "k1", 2, "acme", Expect::Conflict),
        // Keys belong to their tenant.
        ("e4", "k1", 2, "globex", Expect::New),
        ("e5", "", 1, "acme", Expect::BadKey),
        ("e6", &long_key, 1, "acme", Expect::BadKey),
        ("e7", "tab\there", 1, "acme", Expect::BadKey),
        ("e8", "ключ", 1, "acme", Expect::BadKey),
        ("e9", &max_key, 1, "acme", Expect::New),
        ("e10", " ~printable~ ", 3, "acme", Expect::New),
    ];
    for (id, key, fingerprint, who, expect) in cases {
        let before = drv.d.commands_len();
        let result = drv
            .d
            .accept_event(drv.now, &tenant(who), keyed(id, key, fingerprint));
        match (expect, result) {
            (Expect::DuplicateOf(first_id), Ok(a)) => {
                assert!(a.duplicate, "{id}");
                assert_eq!(a.event_id.as_str(), first_id);
                assert_eq!(a.created_at_ms, T0);
                assert_eq!(a.append, first.append);
                assert_eq!(drv.d.commands_len(), before, "{id}: nothing recorded");
            }
            (Expect::Conflict, Err(AcceptError::IdempotencyConflict { key: k })) => {
                assert_eq!(k, key);
                assert_eq!(drv.d.commands_len(), before, "{id}: nothing recorded");
            }
            (Expect::New, Ok(a)) => assert!(!a.duplicate && a.event_id.as_str() == id),
            (Expect::BadKey, Err(AcceptError::IdempotencyKey { .. })) => {}
            (_, other) => panic!("{id}: {other:?}"),
        }
    }
    drv.step();
    assert!(drv.records.len() > records);
    // The duplicate sent nothing: one delivery of e1 in the log.
    let q = DeliveryQuery {
        limit: PAGE_ITEMS_MAX,
        ..DeliveryQuery::tenant(t.clone())
    };
    let ids: Vec<String> = drv
        .d
        .deliveries(&q)
        .items
        .iter()
        .map(|r| r.event_id.as_str().to_string())
        .collect();
    assert_eq!(ids.iter().filter(|id| *id == "e1").count(), 1);
    assert!(!ids.iter().any(|id| id == "e2" || id == "e3"));

    // Replay, and a checkpoint plus what follows it, remember the keys exactly.
    let checkpoint = drv.d.checkpoint(drv.now);
    let mut replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    let mut from_checkpoint = Dispatcher::new(config.clone(), T0);
    from_checkpoint.replay(&checkpoint).unwrap();
    for d in [&mut replayed, &mut from_checkpoint] {
        assert_same(&snapshot(d), &snapshot(&drv.d));
        d.replay_finished(drv.now);
        let again = d.accept_event(drv.now, &t, keyed("e11", "k1", 1)).unwrap();
        assert!(again.duplicate);
        assert_eq!((again.event_id.as_str(), again.created_at_ms), ("e1", T0));
        assert!(matches!(
            d.accept_event(drv.now, &t, keyed("e12", "k1", 9)),
            Err(AcceptError::IdempotencyConflict { .. })
        ));
    }

    // Just before the window ends the key still answers; at its end it is forgotten.
    drv.now = T0 + 1_000 + 10 * MIN - 1;
    assert!(
        drv.d
            .accept_event(drv.now, &t, keyed("e13", "k1", 1))
            .unwrap()
            .duplicate
    );
    drv.now += 1;
    let later = drv
        .d
        .accept_event(drv.now, &t, keyed("e14", "k1", 2))
        .unwrap();
    assert!(!later.duplicate);
    assert_eq!(later.event_id.as_str(), "e14");
}

#[test]
fn a_duplicate_waits_for_the_first_event_to_be_durable() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.auto_durable = false;
    let t = tenant("acme");
    let first = drv
        .d
        .accept_event(drv.now, &t, keyed("e1", "k", 1))
        .unwrap();
    let repeat = drv
        .d
        .accept_event(drv.now, &t, keyed("e2", "k", 1))
        .unwrap();
    assert!(repeat.duplicate);
    // The driver acknowledges both at the first event's record.
    assert_eq!(repeat.append, first.append);
    assert!(drv.step().is_empty(), "nothing is sent before durability");
    drv.d.records_durable(first.append);
    assert_eq!(drv.step().len(), 1, "one delivery for both publishes");
}

#[test]
fn remembered_keys_are_bounded_oldest_first() {
    let config = DispatcherConfig {
        idempotency_keys_max: 3,
        ..DispatcherConfig::default()
    };
    let mut drv = one_webhook(config, spec(&["*"]));
    let t = tenant("acme");
    for i in 0..5 {
        drv.now += 1;
        drv.d
            .accept_event(drv.now, &t, keyed(&format!("e{i}"), &format!("k{i}"), 1))
            .unwrap();
        assert!(drv.d.stats().idempotency_keys <= 3);
    }
    assert_eq!(drv.d.stats().idempotency_keys, 3);
    // k2..k4 are kept; k0 and k1 were forgotten (a different event may use them).
    for (key, remembered) in [("k2", true), ("k4", true), ("k0", false), ("k1", false)] {
        let result = drv.d.accept_event(drv.now, &t, keyed("x", key, 2));
        assert_eq!(
            matches!(result, Err(AcceptError::IdempotencyConflict { .. })),
            remembered,
            "{key}: {result:?}"
        );
    }
}

/// A tenant that floods keys forgets its own oldest first: a quiet tenant's keys,
/// older than all of the flood's, are still remembered.
#[test]
fn a_tenant_flooding_keys_forgets_its_own_first() {
    let config = DispatcherConfig {
        idempotency_keys_max: 6,
        idempotency_keys_per_tenant_max: 3,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config.clone());
    let (quiet, noisy) = (tenant("quiet"), tenant("noisy"));
    for (i, key) in ["q0", "q1"].into_iter().enumerate() {
        drv.now += 1;
        drv.d
            .accept_event(drv.now, &quiet, keyed(&format!("eq{i}"), key, 1))
            .unwrap();
    }
    for i in 0..20 {
        drv.now += 1;
        drv.d
            .accept_event(
                drv.now,
                &noisy,
                keyed(&format!("en{i}"), &format!("n{i}"), 1),
            )
            .unwrap();
    }
    assert_eq!(drv.d.stats().idempotency_keys, 5);
    let remembered = |drv: &mut Driver, t: &TenantId, key: &str| {
        let result = drv.d.accept_event(drv.now, t, keyed("x", key, 2));
        matches!(result, Err(AcceptError::IdempotencyConflict { .. }))
    };
    for key in ["q0", "q1"] {
        assert!(remembered(&mut drv, &quiet, key), "{key}");
    }
    // (A key found forgotten is remembered anew by the probe: the kept ones first.)
    for (key, kept) in [("n17", true), ("n19", true), ("n0", false), ("n16", false)] {
        assert_eq!(remembered(&mut drv, &noisy, key), kept, "{key}");
    }
    drv.step();
    // Replay forgets alike.
    let replayed = replayed_like(config, &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
}

/// A delivery made under a schedule of seven attempts, whose webhook is then set to
/// no retries, ends as exhausted at its next failure instead of making the rest of its
/// attempts back to back.
#[test]
fn a_schedule_changed_to_no_retries_ends_pending_deliveries_at_their_next_failure() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    let t = tenant("acme");
    drv.d.accept_event(T0, &t, event("e0", "a.b")).unwrap();
    let req = drv.step().remove(0);
    let single = spec_retrying(&["*"], vec![]);
    drv.d
        .update_webhook(T0, t.clone(), wh("w1"), single)
        .unwrap();
    assert!(drv.reply(&req, status(503)));
    assert!(drv.advance_to(T0 + 10).is_empty(), "retried with no delay");
    let d = drv.d.delivery(&t, req.delivery).unwrap();
    assert_eq!(d.status, DeliveryStatus::Exhausted);
    assert_eq!(d.attempt, 1);
    // A manual retry still makes one more attempt.
    drv.d.retry_delivery(drv.now, &t, req.delivery).unwrap();
    assert_eq!(drv.step().len(), 1);
}

#[test]
fn deliveries_keep_their_attempt_history() {
    let s = WebhookSpec {
        retry_schedule: Some(RetrySchedule::new(vec![MIN, MIN]).unwrap()),
        ..spec(&["*"])
    };
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    let t = tenant("acme");
    drv.d.accept_event(drv.now, &t, event("e1", "a.b")).unwrap();
    // (answer, expected status, expected error)
    let script: [(AttemptResult, Option<u16>, Option<DeliveryError>); 3] = [
        (status(503), Some(503), Some(DeliveryError::Status(503))),
        (
            AttemptResult::Transport(TransportError::ConnectTimeout),
            None,
            Some(DeliveryError::Transport(TransportError::ConnectTimeout)),
        ),
        (status(204), Some(204), None),
    ];
    let mut starts = Vec::new();
    for (answer, _, _) in &script {
        let req = drv.step().remove(0);
        starts.push(drv.now);
        drv.now += 40;
        drv.reply(&req, answer.clone());
        drv.now += MIN;
    }
    drv.step();
    let record = drv.d.deliveries(&DeliveryQuery::tenant(t.clone())).items[0].clone();
    assert_eq!(record.status, DeliveryStatus::Success);
    assert_eq!(record.attempts.len(), 3);
    for (i, (summary, (_, code, error))) in record.attempts.iter().zip(&script).enumerate() {
        assert_eq!(summary.attempt, i as u32 + 1);
        // Its start is the outcome's time less the latency the driver reported.
        assert_eq!(summary.started_at_ms, starts[i] + 40 - 7);
        assert_eq!(summary.finished_at_ms, Some(starts[i] + 40));
        assert_eq!(summary.response_status, *code);
        assert_eq!(summary.response_time_ms, Some(7));
        assert_eq!(summary.error, *error);
    }
    assert_eq!(record.finished_at_ms, Some(starts[2] + 40));

    // Replay and checkpoints rebuild the same history.
    let mut replayed = Dispatcher::new(DispatcherConfig::default(), T0);
    for r in &drv.records {
        replayed.replay(r).unwrap();
    }
    let mut from_checkpoint = Dispatcher::new(DispatcherConfig::default(), T0);
    from_checkpoint.replay(&drv.d.checkpoint(drv.now)).unwrap();
    for d in [&replayed, &from_checkpoint] {
        assert_eq!(d.delivery(&t, record.id).as_ref(), Some(&record));
    }
}

#[test]
fn attempt_history_is_bounded_and_a_repeated_attempt_is_one_entry() {
    let s = WebhookSpec {
        retry_schedule: Some(RetrySchedule::new(vec![]).unwrap()),
        ..spec(&["*"])
    };
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    let t = tenant("acme");
    drv.d.accept_event(drv.now, &t, event("e1", "a.b")).unwrap();
    let rounds = ATTEMPT_HISTORY_MAX as u32 + 5;
    let mut delivery = None;
    for round in 1..=rounds {
        let req = drv.step().remove(0);
        assert_eq!(req.attempt, round);
        delivery = Some(req.delivery);
        drv.now += 10;
        // A final 4xx: the endpoint answered, so no breaker delays the manual retries.
        drv.reply(&req, status(400));
        drv.step();
        if round < rounds {
            drv.now += 10;
            drv.d.retry_delivery(drv.now, &t, req.delivery).unwrap();
        }
    }
    let id = delivery.unwrap();
    let record = drv.d.delivery(&t, id).unwrap();
    assert_eq!(record.attempts.len(), ATTEMPT_HISTORY_MAX);
    assert_eq!(
        record.attempts[0].attempt,
        rounds - ATTEMPT_HISTORY_MAX as u32 + 1
    );
    assert_eq!(record.attempts.last().unwrap().attempt, rounds);

    // An attempt in flight at a restart is sent again with its number: one entry.
    drv.d.retry_delivery(drv.now, &t, id).unwrap();
    let req = drv.step().remove(0);
    let mut restarted = Driver::new(DispatcherConfig::default());
    for r in &drv.records {
        restarted.d.replay(r).unwrap();
    }
    restarted.now = drv.now + 1_000;
    restarted.d.replay_finished(restarted.now);
    let again = restarted.step().remove(0);
    assert_eq!(again.attempt, req.attempt);
    restarted.reply(&again, status(200));
    restarted.step();
    let record = restarted.d.delivery(&t, id).unwrap();
    assert_eq!(record.attempts.len(), ATTEMPT_HISTORY_MAX);
    let last = record.attempts.last().unwrap();
    assert_eq!(last.attempt, req.attempt);
    assert_eq!(last.started_at_ms, restarted.now - 7);
    assert_eq!(last.response_status, Some(200));
    let previous = &record.attempts[ATTEMPT_HISTORY_MAX - 2];
    assert_eq!(previous.attempt, req.attempt - 1);
}

#[test]
fn webhooks_keep_creation_and_change_times_and_a_description() {
    let mut drv = Driver::new(DispatcherConfig::default());
    let t = tenant("acme");
    let described = WebhookSpec {
        description: Some("orders to the ERP".to_string()),
        ..spec(&["*"])
    };
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w1"), described.clone())
        .unwrap();
    drv.now = T0 + 5_000;
    drv.d
        .upsert_webhook(drv.now, t.clone(), wh("w1"), described.clone())
        .unwrap();
    drv.step();
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert_eq!((view.created_at_ms, view.updated_at_ms), (T0, T0 + 5_000));
    assert_eq!(view.spec.description.as_deref(), Some("orders to the ERP"));

    // A 410 disables it automatically: a change too.
    drv.now += 1_000;
    drv.d.accept_event(drv.now, &t, event("e1", "a.b")).unwrap();
    let req = drv.step().remove(0);
    drv.now += 1_000;
    drv.reply(&req, status(410));
    drv.step();
    let view = drv.d.webhook(&t, &wh("w1")).unwrap();
    assert!(!view.spec.status.is_active());
    assert_eq!((view.created_at_ms, view.updated_at_ms), (T0, drv.now));

    // Replay and checkpoints restore both times and the description.
    let mut replayed = Dispatcher::new(DispatcherConfig::default(), T0);
    for r in &drv.records {
        replayed.replay(r).unwrap();
    }
    let mut from_checkpoint = Dispatcher::new(DispatcherConfig::default(), T0);
    from_checkpoint.replay(&drv.d.checkpoint(drv.now)).unwrap();
    for d in [&replayed, &from_checkpoint] {
        let view = d.webhook(&t, &wh("w1")).unwrap();
        assert_eq!((view.created_at_ms, view.updated_at_ms), (T0, drv.now));
        assert_eq!(view.spec, drv.d.webhook(&t, &wh("w1")).unwrap().spec);
    }

    // A description beyond the limit is the caller's error; at the limit it is fine.
    for (bytes, ok) in [
        (crate::DESCRIPTION_BYTES_MAX, true),
        (crate::DESCRIPTION_BYTES_MAX + 1, false),
    ] {
        let s = WebhookSpec {
            description: Some("d".repeat(bytes)),
            ..spec(&["*"])
        };
        let result = drv.d.upsert_webhook(drv.now, t.clone(), wh("w2"), s);
        assert_eq!(result.is_ok(), ok, "{bytes}: {result:?}");
        if !ok {
            assert!(matches!(
                result,
                Err(RegistryError::Spec(SpecError::DescriptionTooLong { .. }))
            ));
        }
    }
}

#[test]
fn counters_count_live_work_by_outcome() {
    let s = WebhookSpec {
        retry_schedule: Some(RetrySchedule::new(vec![MIN]).unwrap()),
        ..spec(&["*"])
    };
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    let t = tenant("acme");
    drv.d
        .upsert_webhook(drv.now, t.clone(), wh("w2"), spec(&["b.*"]))
        .unwrap();
    drv.step();
    // e1: 503 then 200 (success); e2: 503 twice (exhausted); e3: 400 (failed);
    // e4 (also to w2, deleted before sending); e5: a duplicate of e1's key.
    let mut keyed_event = keyed("e1", "k", 1);
    keyed_event.event_type = EventType::parse("a.x").unwrap();
    drv.d
        .accept_event(drv.now, &t, keyed_event.clone())
        .unwrap();
    drv.d.accept_event(drv.now, &t, event("e2", "a.y")).unwrap();
    drv.d.accept_event(drv.now, &t, event("e3", "a.z")).unwrap();
    keyed_event.id = EventId::parse("e5").unwrap();
    assert!(
        drv.d
            .accept_event(drv.now, &t, keyed_event)
            .unwrap()
            .duplicate
    );
    let first = drv.step();
    assert_eq!(drv.d.stats().retries_pending, 0);
    for req in &first {
        let answer = if req.event_id.as_str() == "e3" {
            400
        } else {
            503
        };
        drv.now += 1;
        drv.reply(req, status(answer));
    }
    drv.step();
    // e1 and e2 wait for their retry.
    assert_eq!(drv.d.stats().retries_pending, 2);
    drv.d.accept_event(drv.now, &t, event("e4", "b.x")).unwrap();
    drv.d.delete_webhook(drv.now, &t, &wh("w2")).unwrap();
    // Answer whatever is sent until every delivery ended: e1 succeeds on its retry, e2
    // keeps failing, e4 succeeds.
    for _ in 0..100 {
        if drv.d.stats().pending_deliveries == 0 {
            break;
        }
        drv.now += MIN;
        for req in drv.step() {
            let answer = if req.event_id.as_str() == "e2" {
                503
            } else {
                200
            };
            drv.reply(&req, status(answer));
            assert_eq!(drv.d.stats().retries_pending, drv.d.retries_pending_scan());
        }
    }
    drv.step();
    let c = drv.d.counters();
    assert_eq!((c.events_accepted, c.events_duplicate), (4, 1));
    // e4 went to both webhooks: 5 deliveries.
    assert_eq!(c.deliveries_created, 5);
    assert_eq!(
        (
            c.deliveries_succeeded,
            c.deliveries_exhausted,
            c.deliveries_failed,
            c.deliveries_webhook_deleted
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(
        (c.attempts_succeeded, c.attempts_retryable, c.attempts_final),
        (2, 3, 1)
    );
    assert_eq!(c.attempt_latency_ms.count, 6);
    assert_eq!(c.attempt_latency_ms.counts[1], 6, "7 ms: the 5..=10 bucket");
    assert_eq!(c.attempt_latency_ms.sum, 42);
    assert_eq!(drv.d.stats().retries_pending, 0);

    // Replay counts nothing (the counters are of this process's work).
    let mut replayed = Dispatcher::new(DispatcherConfig::default(), T0);
    for r in &drv.records {
        replayed.replay(r).unwrap();
    }
    assert_eq!(replayed.counters(), Counters::default());
    assert_eq!(replayed.stats().retries_pending, 0);
}

#[test]
fn a_delivery_ends_once_and_its_attempts_only_grow() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(drv.now, &tenant("acme"), event("e1", "a.b"))
        .unwrap();
    let sent = drv.step();
    assert_eq!(sent.len(), 1);
    drv.reply(&sent[0], status(500));
    drv.step();
    let delivery = sent[0].delivery.0;
    let replayed = |extra: &[Record]| {
        let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
        for record in &drv.records {
            d.replay(record).unwrap();
        }
        extra.iter().try_for_each(|record| d.replay(record))
    };
    let started = |attempt| {
        Record::AttemptStarted(record::AttemptStarted {
            at_ms: T0,
            delivery,
            attempt,
        })
    };
    let ended = Record::DeliveryFinished(record::DeliveryFinished {
        at_ms: T0,
        delivery,
        status: "failed".into(),
        reason: None,
    });
    // The journal as written, and a repeat of an attempt (a restart), replay.
    assert_eq!(replayed(&[]), Ok(()));
    assert_eq!(replayed(&[started(2), started(2)]), Ok(()));
    assert_eq!(replayed(std::slice::from_ref(&ended)), Ok(()));
    // An attempt number going back, or a second end, is refused as corruption.
    let refused = |result: Result<(), ReplayError>, what: &str| match result {
        Err(ReplayError::Invalid { reason, .. }) => assert!(reason.contains(what), "{reason}"),
        other => panic!("expected a refusal naming {what:?}, got {other:?}"),
    };
    refused(
        replayed(&[started(2), started(1)]),
        "starts attempt 1 after attempt 2",
    );
    refused(replayed(&[ended.clone(), ended]), "ends again");
}

/// An in-memory journal for the body tests: segments of aligned bytes, payloads at
/// 16-byte boundaries, read back as a [`BodyStore`].
#[derive(Default)]
struct Segments(BTreeMap<u64, rkyv::util::AlignedVec>);

impl Segments {
    /// Appends `payload` to `segment`; returns where it went.
    fn append(&mut self, segment: u64, payload: &[u8]) -> PayloadAt {
        let bytes = self.0.entry(segment).or_default();
        while bytes.len() % 16 != 0 {
            bytes.push(0);
        }
        let offset = bytes.len() as u64;
        bytes.extend_from_slice(payload);
        PayloadAt { segment, offset }
    }

    fn payload(&self, at: PayloadAt, len: usize) -> &[u8] {
        &self.0[&at.segment][at.offset as usize..at.offset as usize + len]
    }
}

impl BodyStore for Segments {
    fn body(&self, at: BodyPos) -> Option<&[u8]> {
        let bytes = self.0.get(&at.segment)?;
        bytes.get(at.offset as usize..at.offset as usize + at.len as usize)
    }
}

/// Appends every queued record to segment 1, telling the dispatcher where events'
/// bodies went; returns the sends.
fn pump_stored(d: &mut Dispatcher, segments: &mut Segments) -> Vec<SendRequest> {
    let mut sends = Vec::new();
    while let Some(command) = d.pop_command() {
        match command {
            Command::Append { id, record } => {
                let (_, _, payload) = record.encode().unwrap();
                let at = segments.append(1, &payload);
                let spans = record::body_spans(&payload).unwrap();
                if let (Record::EventAccepted(_), Some(Some(span))) = (&record, spans.first()) {
                    d.body_stored(id, at.body(*span).unwrap());
                }
                d.records_durable(id);
            }
            Command::Send(request) => sends.push(request),
        }
    }
    sends
}

/// Writes a one-part checkpoint of `d` (bodies read from `segments`) into a new store's
/// segment 2 and tells the dispatcher; returns that store, where the part went and its
/// length.
fn checkpoint_into_segment_2(
    d: &mut Dispatcher,
    segments: &Segments,
) -> (Segments, PayloadAt, usize) {
    let mut parts = d.checkpoint_parts_with(T0, usize::MAX, segments);
    let part = parts.next().unwrap();
    assert!(parts.next().is_none());
    let (_, _, payload) = part.encode().unwrap();
    let mut moved = Segments::default();
    let at = moved.append(2, &payload);
    parts.stored(moved.payload(at, payload.len()), at).unwrap();
    let moves = parts.into_moves();
    d.checkpoint_stored(moves);
    (moved, at, payload.len())
}

/// A dispatcher holding one event for one webhook, not yet journaled, and an empty store.
fn one_event_to_one_webhook() -> (Dispatcher, Segments) {
    let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
    let segments = Segments::default();
    d.upsert_webhook(T0, tenant("acme"), wh("wh_a"), spec(&["order.*"]))
        .unwrap();
    d.accept_event(T0, &tenant("acme"), event("evt_1", "order.created"))
        .unwrap();
    (d, segments)
}

#[test]
fn an_event_with_one_delivery_takes_its_stored_body_in_place() {
    let (mut d, mut segments) = one_event_to_one_webhook();
    let before = Arc::as_ptr(&d.deliveries.get(&DeliveryId(1)).unwrap().event);
    pump_stored(&mut d, &mut segments);
    let event = &d.deliveries.get(&DeliveryId(1)).unwrap().event;
    assert!(
        matches!(event.body, EventBody::Stored(_)),
        "the event keeps the body's position"
    );
    assert_eq!(
        Arc::as_ptr(event),
        before,
        "the one delivery's event changed in place, not replaced"
    );
    // And the send reads the bytes where the store holds them.
    let (_, bytes) = segments.0.iter_mut().next().unwrap();
    let from = bytes
        .windows(7)
        .position(|w| w == br#"{"n":1}"#)
        .expect("the envelope holds the data");
    bytes[from + 5] = b'9';
    d.tick_with(T0, &segments);
    let sends = pump_stored(&mut d, &mut segments);
    assert_eq!(sends.len(), 1);
    assert!(
        sends[0].body.windows(7).any(|w| w == br#"{"n":9}"#),
        "the send carries the stored bytes"
    );
}

#[test]
fn a_checkpoint_moves_a_lone_deliverys_event_body_in_place() {
    let (mut d, mut segments) = one_event_to_one_webhook();
    pump_stored(&mut d, &mut segments);
    let before = Arc::as_ptr(&d.deliveries.get(&DeliveryId(1)).unwrap().event);
    let (mut moved, _, _) = checkpoint_into_segment_2(&mut d, &segments);
    let event = &d.deliveries.get(&DeliveryId(1)).unwrap().event;
    assert!(
        matches!(event.body, EventBody::Stored(s) if s.pos().segment == 2),
        "the body now points into the checkpoint"
    );
    assert_eq!(Arc::as_ptr(event), before, "moved in place, not replaced");
    d.tick_with(T0, &moved);
    let sends = pump_stored(&mut d, &mut moved);
    assert_eq!(sends.len(), 1);
    assert!(sends[0].body.windows(7).any(|w| w == br#"{"n":1}"#));
}

#[test]
fn a_delivery_boxes_what_its_attempts_left_only_once_it_has_any() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(T0, &tenant("acme"), event("evt_1", "order.created"))
        .unwrap();
    let sends = drv.step();
    assert_eq!(sends.len(), 1);
    // In flight: the attempt's entry is kept.
    let id = sends[0].delivery;
    assert!(drv.d.deliveries.get(&id).unwrap().outcomes.is_some());
    // Ended without an outcome (the webhook was deleted meanwhile): the abandoned
    // entry goes, and the error that ended it is what is left.
    drv.d
        .delete_webhook(T0, &tenant("acme"), &wh("w1"))
        .unwrap();
    drv.step();
    let d = drv.d.deliveries.get(&id).unwrap();
    assert!(d.attempts().is_empty());
    assert_eq!(d.last_error(), Some(DeliveryError::WebhookDeleted));
    // A delivery that never made an attempt has no box at all.
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w2"), spec(&["*"]))
        .unwrap();
    drv.auto_durable = false;
    drv.d
        .accept_event(T0, &tenant("acme"), event("evt_2", "order.created"))
        .unwrap();
    drv.step();
    let fresh = drv
        .d
        .deliveries
        .values()
        .find(|d| d.event.id.as_str() == "evt_2")
        .unwrap();
    assert!(fresh.outcomes.is_none(), "no attempt, no box");
    assert_eq!(fresh.last_status(), None);
    assert_eq!(fresh.last_latency_ms(), None);
    assert_eq!(fresh.last_error(), None);
    assert!(fresh.last_body().is_empty() && fresh.last_headers().next().is_none());
}

#[test]
fn stored_bodies_are_read_back_when_signing_and_follow_the_checkpoint() {
    let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
    let mut segments = Segments::default();
    d.upsert_webhook(T0, tenant("acme"), wh("wh_a"), spec(&["order.*"]))
        .unwrap();
    d.upsert_webhook(T0, tenant("acme"), wh("wh_b"), spec(&["order.*"]))
        .unwrap();
    d.accept_event(T0, &tenant("acme"), event("evt_1", "order.created"))
        .unwrap();
    pump_stored(&mut d, &mut segments);
    // The dispatcher kept the position, not the bytes: change them in the store (same
    // length) and the sends carry the change, signed.
    let body_at = {
        let (at, bytes) = segments.0.iter_mut().next().unwrap();
        let from = bytes
            .windows(7)
            .position(|w| w == br#"{"n":1}"#)
            .expect("the envelope holds the data");
        bytes[from + 5] = b'7';
        (*at, from)
    };
    d.tick_with(T0, &segments);
    let sends = pump_stored(&mut d, &mut segments);
    assert_eq!(sends.len(), 2, "one send per webhook");
    assert_eq!(
        sends[0].body.as_ptr(),
        sends[1].body.as_ptr(),
        "the event's sends of one tick share one read of the store"
    );
    for send in &sends {
        assert!(
            send.body.windows(7).any(|w| w == br#"{"n":7}"#),
            "the body was read from the store"
        );
        let headers: Vec<(&str, &str)> = send.headers.iter().collect();
        Verifier::new(Scheme::Standard, &[SECRET])
            .unwrap()
            .verify(
                &headers[..],
                "https://receiver.example/hook",
                &send.body,
                (T0 / 1000) as i64,
            )
            .expect("signed over the stored bytes");
    }
    for send in sends {
        d.attempt_finished(
            T0,
            Outcome {
                delivery: send.delivery,
                attempt: send.attempt,
                result: status(503),
                latency_ms: 1,
                response_body: Vec::new(),
                response_headers: ResponseHeaders::new(),
            },
        );
    }
    pump_stored(&mut d, &mut segments);

    // A checkpoint copies the bodies into its part (segment 2); once the dispatcher
    // knows, the first segment may go.
    let (mut moved, at, payload_len) = checkpoint_into_segment_2(&mut d, &segments);
    assert_eq!(body_at.0, 1);
    let later = T0 + HOUR;
    d.tick_with(later, &moved);
    let retried = pump_stored(&mut d, &mut moved);
    assert_eq!(retried.len(), 2, "both retried, bodies from the checkpoint");
    assert!(retried
        .iter()
        .all(|s| s.body.windows(7).any(|w| w == br#"{"n":7}"#)));

    // Recovery from the checkpoint alone keeps its positions too.
    let frames = [Ok::<_, std::io::Error>(crate::session::JournalFrame {
        seq: 1,
        kind: record::kind::CHECKPOINT,
        version: crate::session::CHECKPOINT_FRAME_VERSION,
        checkpoint: true,
        payload: moved.payload(at, payload_len),
        at: Some(at),
    })];
    let mut recovered =
        crate::session::recover(DispatcherConfig::default(), later, frames).unwrap();
    recovered.tick_with(later, &moved);
    let resent = pump_stored(&mut recovered, &mut moved);
    assert_eq!(resent.len(), 2, "both due again after recovery");
    assert!(resent
        .iter()
        .all(|s| s.body.windows(7).any(|w| w == br#"{"n":7}"#)));
}

/// One event's deliveries spread over several checkpoint parts (the smallest target
/// puts one delivery in each), the first of them successful so its part leaves the body
/// out: every delivery still pending ends up pointing at a part's copy, live and after
/// recovery from those parts, once the segment the event was first written to is gone.
#[test]
fn stored_bodies_follow_an_event_split_over_checkpoint_parts() {
    let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
    let mut segments = Segments::default();
    for webhook in ["wh_a", "wh_b", "wh_c"] {
        d.upsert_webhook(T0, tenant("acme"), wh(webhook), spec(&["order.*"]))
            .unwrap();
    }
    d.accept_event(T0, &tenant("acme"), event("evt_1", "order.created"))
        .unwrap();
    pump_stored(&mut d, &mut segments);
    d.tick_with(T0, &segments);
    let sends = pump_stored(&mut d, &mut segments);
    assert_eq!(sends.len(), 3);
    let body = sends[0].body.clone();
    for send in sends {
        let answer = if send.webhook == wh("wh_a") { 200 } else { 503 };
        d.attempt_finished(
            T0,
            Outcome {
                delivery: send.delivery,
                attempt: send.attempt,
                result: status(answer),
                latency_ms: 1,
                response_body: Vec::new(),
                response_headers: ResponseHeaders::new(),
            },
        );
    }
    pump_stored(&mut d, &mut segments);

    // Each part in a segment of its own (2, 3, …); segment 1 is then dropped.
    let mut moved = Segments::default();
    let mut frames = Vec::new();
    let mut parts = d.checkpoint_parts_with(T0, 1, &segments);
    let mut segment = 2;
    while let Some(part) = parts.next() {
        let (_, _, payload) = part.encode().unwrap();
        let at = moved.append(segment, &payload);
        parts.stored(moved.payload(at, payload.len()), at).unwrap();
        frames.push((at, payload.len()));
        segment += 1;
    }
    assert!(frames.len() >= 3, "one delivery per part");
    let moves = parts.into_moves();
    d.checkpoint_stored(moves);
    let later = T0 + HOUR;
    d.tick_with(later, &moved);
    let retried = pump_stored(&mut d, &mut moved);
    assert_eq!(retried.len(), 2, "the two failed deliveries are retried");
    assert!(
        retried.iter().all(|s| s.body == body),
        "with the event's body"
    );

    let recovered_frames: Vec<_> = frames
        .iter()
        .map(|&(at, len)| {
            Ok::<_, std::io::Error>(crate::session::JournalFrame {
                seq: at.segment,
                kind: record::kind::CHECKPOINT,
                version: crate::session::CHECKPOINT_FRAME_VERSION,
                checkpoint: true,
                payload: moved.payload(at, len),
                at: Some(at),
            })
        })
        .collect();
    let mut recovered =
        crate::session::recover(DispatcherConfig::default(), later, recovered_frames).unwrap();
    recovered.tick_with(later + HOUR, &moved);
    let resent = pump_stored(&mut recovered, &mut moved);
    assert_eq!(resent.len(), 2, "both due again after recovery");
    assert!(resent.iter().all(|s| s.body == body));
}

/// One delivery whose first attempt failed and whose second is in flight.
fn second_attempt_in_flight() -> (Driver, SendRequest) {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    drv.d
        .accept_event(drv.now, &tenant("acme"), event("e1", "a.b"))
        .unwrap();
    let first = drv.step().remove(0);
    drv.now += 7;
    drv.reply(&first, status(503));
    drv.step();
    let second = drv.advance_to(drv.now + 2 * MIN).remove(0);
    assert_eq!((second.delivery, second.attempt), (first.delivery, 2));
    (drv, second)
}

/// Journals of older builds hold an `AttemptStarted` record before each outcome and for
/// each attempt in flight: they replay to the state the live dispatcher holds, and an
/// attempt whose start alone was recorded is made again with its number.
#[test]
fn journals_with_attempt_started_records_still_replay() {
    let (drv, second) = second_attempt_in_flight();
    assert!(
        !drv.records
            .iter()
            .any(|r| matches!(r, Record::AttemptStarted(_))),
        "this build writes no AttemptStarted record"
    );
    let started = |delivery, attempt, at_ms| {
        Record::AttemptStarted(record::AttemptStarted {
            at_ms,
            delivery,
            attempt,
        })
    };
    let mut old = Vec::new();
    for r in &drv.records {
        if let Record::AttemptFinished(f) = r {
            old.push(started(f.delivery, f.attempt, f.at_ms - f.latency_ms));
        }
        old.push(r.clone());
    }
    let marks = drv.d.in_flight_marks();
    assert_eq!(marks.len(), 1);
    old.push(started(second.delivery.0, 2, marks[0].2));
    let mut replayed = Dispatcher::new(DispatcherConfig::default(), T0);
    for r in &old {
        let (kind, version, payload) = r.encode().unwrap();
        replayed
            .replay(&Record::decode(kind, version, &payload).unwrap())
            .unwrap();
    }
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
    assert_eq!(replayed.stats(), drv.d.stats());
    let mut restarted = Driver::new(DispatcherConfig::default());
    restarted.d = replayed;
    restarted.now = drv.now + 1_000;
    restarted.d.replay_finished(restarted.now);
    // Due now, fired on the wheel's next 10 ms boundary.
    let again = restarted.advance_to(restarted.now + 10);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].delivery, again[0].attempt), (second.delivery, 2));
}

/// A delivery that ends while an attempt is in flight forgets that attempt, as a replay
/// of the journal does (the attempt has no record): live and replayed state agree, and a
/// manual retry makes the attempt's number again.
#[test]
fn ending_a_delivery_in_flight_forgets_its_attempt() {
    let (mut drv, second) = second_attempt_in_flight();
    let t = tenant("acme");
    let disabled = disabled_by_hand(&["*"], drv.now);
    drv.d
        .upsert_webhook(drv.now, t.clone(), wh("w1"), disabled)
        .unwrap();
    drv.step();
    let record = drv.d.delivery(&t, second.delivery).unwrap();
    assert_eq!(record.status, DeliveryStatus::Failed);
    assert_eq!(record.attempt, 1);
    assert_eq!(record.attempts.len(), 1);
    // The outcome of the abandoned attempt is stale.
    assert!(!drv.reply(&second, status(200)));
    let replayed = replayed_like(DispatcherConfig::default(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
    drv.d
        .upsert_webhook(drv.now, t.clone(), wh("w1"), spec(&["*"]))
        .unwrap();
    drv.d.retry_delivery(drv.now, &t, second.delivery).unwrap();
    let again = drv.advance_to(drv.now + 10);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].delivery, again[0].attempt), (second.delivery, 2));
}

/// The outcomes reported before the commands are polled share one record, in the order
/// reported, until a record of another kind comes between them or the batch would pass
/// its bound; replay applies each as live handling did.
#[test]
fn outcomes_of_one_turn_share_a_record() {
    let mut s = spec(&["*"]);
    s.limits.in_flight_max = 64;
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    let t = tenant("acme");
    let publish = |drv: &mut Driver, n: usize, from: usize| {
        for i in from..from + n {
            drv.d
                .accept_event(drv.now, &t, event(&format!("e{i}"), "a.b"))
                .unwrap();
        }
        drv.step()
    };
    let sent = publish(&mut drv, 6, 0);
    assert_eq!(sent.len(), 6);
    let before = drv.records.len();
    drv.now += 10;
    // Reported in an order of their own; a 410 in the middle disables the webhook, whose
    // records come between the outcomes before and after it.
    let order = [4, 0, 5, 2, 1, 3];
    for (n, &i) in order.iter().enumerate() {
        let answer = if n == 3 { status(410) } else { status(200) };
        drv.reply(&sent[i], answer);
    }
    drv.step();
    let kinds: Vec<u16> = drv.records[before..].iter().map(Record::kind).collect();
    assert_eq!(kinds[0], record::kind::ATTEMPTS_FINISHED);
    let Record::AttemptsFinished(first) = &drv.records[before] else {
        unreachable!("checked above")
    };
    let ids = |outcomes: &[record::AttemptFinished]| -> Vec<u64> {
        outcomes.iter().map(|o| o.delivery).collect()
    };
    let want: Vec<u64> = order[..4].iter().map(|&i| sent[i].delivery.0).collect();
    assert_eq!(ids(first), want, "in the order reported, through the 410");
    assert_eq!(kinds[1], record::kind::WEBHOOK_UPSERTED, "{kinds:x?}");
    // The two outcomes after the 410 are stale (their deliveries ended with the
    // webhook): nothing records them.
    assert!(!drv.records[before + 1..]
        .iter()
        .any(|r| matches!(r, Record::AttemptFinished(_) | Record::AttemptsFinished(_))));
    let replayed = replayed_like(DispatcherConfig::default(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));

    // An outcome polled before the next is reported is a record of its own.
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    let sent = publish(&mut drv, 2, 0);
    let before = drv.records.len();
    drv.reply(&sent[0], status(200));
    drv.step();
    drv.reply(&sent[1], status(200));
    drv.step();
    let kinds: Vec<u16> = drv.records[before..].iter().map(Record::kind).collect();
    assert_eq!(kinds, [record::kind::ATTEMPT_FINISHED; 2]);
}

/// A batch of outcomes that each keep the largest response stays within its bound,
/// which a journal segment of the smallest size can hold: the next outcome starts a new
/// record.
#[test]
fn outcome_batches_are_bounded() {
    let mut s = spec(&["*"]);
    s.limits.in_flight_max = 64;
    let mut drv = one_webhook(DispatcherConfig::default(), s);
    let t = tenant("acme");
    for i in 0..40 {
        drv.d
            .accept_event(drv.now, &t, event(&format!("e{i}"), "a.b"))
            .unwrap();
    }
    let sent = drv.step();
    assert_eq!(sent.len(), 40);
    let before = drv.records.len();
    let headers: Vec<(String, String)> = (0..RESPONSE_HEADERS_MAX)
        .map(|i| {
            (
                format!("x-h{i:02}"),
                "v".repeat(RESPONSE_HEADER_BYTES_MAX / 16 - 5),
            )
        })
        .collect();
    for req in &sent {
        let taken = drv.d.attempt_finished(
            drv.now + 5,
            Outcome {
                delivery: req.delivery,
                attempt: req.attempt,
                result: AttemptResult::Transport(TransportError::RequestTimeout),
                latency_ms: 5,
                response_body: vec![b'x'; RESPONSE_BODY_BYTES_MAX + 100],
                response_headers: ResponseHeaders::bounded(headers.iter().map(|(n, v)| (n, v))),
            },
        );
        assert!(taken);
    }
    drv.step();
    let mut outcomes = 0;
    let mut batches = 0;
    for record in &drv.records[before..] {
        let (_, _, payload) = record.encode().unwrap();
        match record {
            Record::AttemptsFinished(batch) => {
                batches += 1;
                outcomes += batch.len();
                let estimated: usize = batch.iter().map(record::outcome_bytes_estimate).sum();
                assert!(estimated <= record::OUTCOMES_RECORD_BYTES_MAX);
                assert!(
                    payload.len() <= estimated,
                    "{} > {estimated}",
                    payload.len()
                );
                assert_eq!(batch[0].response_headers.len(), RESPONSE_HEADERS_MAX);
            }
            Record::AttemptFinished(_) => outcomes += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(outcomes, 40);
    assert!(batches > 1, "40 outcomes of ~7 KiB do not fit one batch");
    let replayed = replayed_like(DispatcherConfig::default(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &snapshot(&drv.d));
}

#[test]
fn an_event_body_keeps_its_position_or_its_bytes() {
    let at = BodyPos {
        segment: u64::MAX - 1,
        offset: u32::MAX,
        len: 300,
    };
    let stored = EventBody::stored(at);
    assert!(matches!(stored, EventBody::Stored(s) if s.pos() == at));
    assert_eq!(stored.len(), 300);
    // An empty body needs no position: it is held, and reads as empty from any store.
    let empty = EventBody::stored(BodyPos { len: 0, ..at });
    assert!(matches!(empty, EventBody::Held(_)));
    assert!(empty.is_empty());
    assert_eq!(empty.bytes(&Held), b"");
    let held = EventBody::held(Arc::from(&b"{}"[..]));
    assert_eq!(held.len(), 2);
    assert_eq!(held.bytes(&Held), b"{}");
}

#[test]
fn a_delivery_keeps_absent_values_apart_from_present_ones() {
    let mut drv = Driver::new(DispatcherConfig::default());
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), spec(&["*"]))
        .unwrap();
    drv.d
        .accept_event(T0, &tenant("acme"), event("evt_1", "order.created"))
        .unwrap();
    drv.step();
    let id = DeliveryId(1);
    let d = drv.d.deliveries.get_mut(&id).unwrap();
    assert_eq!(d.last_status(), None);
    assert_eq!(d.last_latency_ms(), None);
    d.outcomes_mut().set_last_latency_ms(Some(u64::MAX));
    assert_eq!(d.last_latency_ms(), Some(Attempt::NO_TIME - 1));
    d.outcomes_mut().set_last_latency_ms(Some(0));
    assert_eq!(d.last_latency_ms(), Some(0));
    d.set_due_ms(Some(u64::MAX));
    assert_eq!(d.due_ms(), Some(u64::MAX - 1));
    d.set_due_ms(None);
    assert_eq!(d.due_ms(), None);
    assert_eq!(d.finish_seq(), None);
    d.status = DeliveryStatus::Failed;
    d.set_finished(7);
    assert_eq!(d.finish_seq(), Some(7));
    assert_eq!(d.due_ms(), None, "an ended delivery has no due time");
}

/// One webhook of tenant `acme` for every event, and `events` events accepted (not yet
/// stepped).
fn with_events(config: DispatcherConfig, events: usize) -> Driver {
    let mut drv = one_webhook(config, spec(&["*"]));
    for n in 0..events {
        drv.d
            .accept_event(T0, &tenant("acme"), event(&format!("e{n}"), "a.b"))
            .unwrap();
    }
    drv
}

/// Polls every queued command; records are durable at once.
fn drain_records(drv: &mut Driver) {
    while let Some(cmd) = drv.d.pop_command() {
        if let Command::Append { id, record } = cmd {
            drv.records.push(record);
            drv.d.records_durable(id);
        }
    }
}

#[test]
fn a_large_backlog_ends_over_several_ticks_and_a_webhook_made_anew_keeps_its_own() {
    let config = DispatcherConfig {
        endings_per_tick_max: 10,
        ..DispatcherConfig::default()
    };
    let mut drv = one_webhook(config.clone(), spec(&["*"]));
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w2"), spec(&["*"]))
        .unwrap();
    for n in 0..40 {
        drv.d
            .accept_event(T0, &tenant("acme"), event(&format!("e{n}"), "a.b"))
            .unwrap();
    }
    drv.step();
    assert_eq!(drv.d.stats().pending_deliveries, 80);

    // The tenant's held deliveries alternate w1, w2: looking at 10 of them ends 5.
    drv.d
        .delete_webhook(T0, &tenant("acme"), &wh("w1"))
        .unwrap();
    drain_records(&mut drv);
    assert_eq!(drv.d.stats().pending_deliveries, 75);
    assert_eq!(drv.d.endings_underway(), 1);
    assert_eq!(
        drv.d.next_deadline_ms(),
        Some(T0),
        "the rest is due at once"
    );
    drv.d.tick(T0);
    drain_records(&mut drv);
    assert_eq!(drv.d.stats().pending_deliveries, 70);

    // Made anew under the same id: the old webhook's deliveries all end first, and the
    // new one's are its own.
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), spec(&["*"]))
        .unwrap();
    assert_eq!(drv.d.endings_underway(), 0);
    assert_eq!(drv.d.stats().pending_deliveries, 40);
    drv.d
        .accept_event(T0, &tenant("acme"), event("fresh", "a.b"))
        .unwrap();
    drv.step();
    assert_eq!(drv.d.stats().pending_deliveries, 42);
    let ended: Vec<&record::DeliveryFinished> = drv
        .records
        .iter()
        .filter_map(|r| match r {
            Record::DeliveryFinished(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended.len(),
        40,
        "one record per delivery of the old webhook"
    );
    assert!(ended
        .iter()
        .all(|f| f.reason == Some(DeliveryError::WebhookDeleted.name())));
    let deleted_at = drv
        .records
        .iter()
        .position(|r| matches!(r, Record::WebhookDeleted(_)))
        .unwrap();
    let first_end = drv
        .records
        .iter()
        .position(|r| matches!(r, Record::DeliveryFinished(_)))
        .unwrap();
    assert!(
        deleted_at < first_end,
        "the journal says why they end first"
    );

    // Replaying the records gives the same state.
    let fresh = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));

    // Disabled, then stopped part way: recovery ends the rest.
    let disabled = disabled_by_hand(&["*"], T0);
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w2"), disabled)
        .unwrap();
    drain_records(&mut drv);
    assert_eq!(drv.d.endings_underway(), 1);
    let still = drv.d.stats().pending_deliveries;
    assert!(still > 1, "w2's backlog is only begun: {still} pending");
    let mut restarted = Driver::new(config);
    for record in &drv.records {
        restarted.d.replay(record).unwrap();
    }
    restarted.d.replay_finished(T0);
    restarted.step();
    assert_eq!(
        restarted.d.stats().pending_deliveries,
        1,
        "only the new w1's delivery is left"
    );
    // Live, the ticks end them all as well.
    drv.step();
    assert_eq!(drv.d.stats().pending_deliveries, 1);
    assert_eq!(drv.d.endings_underway(), 0);
}

#[test]
fn ending_a_webhook_at_once_leaves_other_backlogs_to_the_per_tick_allowance() {
    let config = DispatcherConfig {
        endings_per_tick_max: 10,
        ..DispatcherConfig::default()
    };
    let mut drv = Driver::new(config);
    for t in ["acme", "other"] {
        drv.d
            .upsert_webhook(T0, tenant(t), wh("w1"), spec(&["*"]))
            .unwrap();
    }
    for n in 0..60 {
        drv.d
            .accept_event(T0, &tenant("other"), event(&format!("o{n}"), "a.b"))
            .unwrap();
    }
    for n in 0..3 {
        drv.d
            .accept_event(T0, &tenant("acme"), event(&format!("a{n}"), "a.b"))
            .unwrap();
    }
    let sent = drv.step();
    assert_eq!(drv.d.stats().pending_deliveries, 63);
    // Other's backlog begins to end (10 looked at), then acme's webhook goes and comes
    // back under the same id: acme's 3 end at once, other's wait for their ticks.
    drv.d
        .delete_webhook(T0, &tenant("other"), &wh("w1"))
        .unwrap();
    drv.d
        .delete_webhook(T0, &tenant("acme"), &wh("w1"))
        .unwrap();
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), spec(&["*"]))
        .unwrap();
    drain_records(&mut drv);
    assert_eq!(drv.d.stats().pending_deliveries, 50);
    assert_eq!(drv.d.endings_underway(), 1);

    // An answer to an attempt of a deleted webhook's delivery that its ending has not
    // reached yet does not count: the delivery ends as the ending would end it.
    let late = sent
        .iter()
        .rev()
        .find(|r| r.tenant == tenant("other"))
        .unwrap();
    assert!(!drv.reply(late, status(200)));
    let rec = drv.d.delivery(&tenant("other"), late.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Failed);
    assert_eq!(rec.error, Some(DeliveryError::WebhookDeleted));
    drv.step();
    assert_eq!(drv.d.stats().pending_deliveries, 0);
}

#[test]
fn an_answer_for_a_disabled_webhook_not_yet_reached_by_its_ending_does_not_count() {
    let mut drv = with_events(
        DispatcherConfig {
            endings_per_tick_max: 1,
            ..DispatcherConfig::default()
        },
        5,
    );
    let sent = drv.step();
    assert_eq!(sent.len(), 5);
    let disabled = disabled_by_hand(&["*"], T0);
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), disabled)
        .unwrap();
    drain_records(&mut drv);
    assert!(drv.d.endings_underway() > 0);
    let last = sent.last().unwrap();
    assert!(!drv.reply(last, status(200)), "the answer does not count");
    let rec = drv.d.delivery(&tenant("acme"), last.delivery).unwrap();
    assert_eq!(rec.status, DeliveryStatus::Failed);
    assert_eq!(rec.error, Some(DeliveryError::WebhookDisabled));
    assert_eq!(drv.d.counters().attempts_succeeded, 0);
    // Replayed, the journal says the same.
    drv.step();
    let fresh = replayed_like(drv.d.config().clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
}

#[test]
fn a_change_that_leaves_a_webhook_disabled_lets_its_ending_go_on_and_a_deletion_renames_why() {
    let mut drv = with_events(
        DispatcherConfig {
            endings_per_tick_max: 1,
            ..DispatcherConfig::default()
        },
        6,
    );
    drv.step();
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), disabled_by_hand(&["*"], T0))
        .unwrap();
    drain_records(&mut drv);
    let pending = drv.d.stats().pending_deliveries;
    assert!(pending > 1, "{pending}");
    // Changed while disabled (here: the same spec again): no rush, no second ending.
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), disabled_by_hand(&["a.*"], T0))
        .unwrap();
    drain_records(&mut drv);
    assert_eq!(drv.d.endings_underway(), 1);
    assert_eq!(drv.d.stats().pending_deliveries, pending);
    // Deleted: the same ending goes on, for the new reason.
    drv.d
        .delete_webhook(T0, &tenant("acme"), &wh("w1"))
        .unwrap();
    drain_records(&mut drv);
    assert_eq!(drv.d.endings_underway(), 1);
    drv.step();
    assert_eq!(drv.d.stats().pending_deliveries, 0);
    let reasons: Vec<Option<String>> = drv
        .records
        .iter()
        .filter_map(|r| match r {
            Record::DeliveryFinished(f) => Some(f.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 6);
    assert_eq!(
        reasons.last().unwrap().as_deref(),
        Some(DeliveryError::WebhookDeleted.name().as_str())
    );
    assert_eq!(
        reasons.first().unwrap().as_deref(),
        Some(DeliveryError::WebhookDisabled.name().as_str())
    );
}

#[test]
fn recovery_queues_the_endings_it_finds_without_writing_records() {
    let config = DispatcherConfig {
        endings_per_tick_max: 1,
        ..DispatcherConfig::default()
    };
    let mut drv = with_events(
        DispatcherConfig {
            endings_per_tick_max: 1,
            ..DispatcherConfig::default()
        },
        4,
    );
    drv.step();
    // The journal holds the disabling, none of the endings (a stop right after it).
    let cut = drv.records.len() + 1;
    drv.d
        .upsert_webhook(T0, tenant("acme"), wh("w1"), disabled_by_hand(&["*"], T0))
        .unwrap();
    drain_records(&mut drv);
    let mut fresh = Driver::new(config);
    for record in &drv.records[..cut] {
        fresh.d.replay(record).unwrap();
    }
    fresh.d.replay_finished(T0);
    assert!(fresh.d.pop_command().is_none(), "recovery writes nothing");
    assert_eq!(fresh.d.endings_underway(), 1);
    assert_eq!(fresh.d.stats().pending_deliveries, 4);
    fresh.step();
    assert_eq!(fresh.d.stats().pending_deliveries, 0);
}

mod last_response {
    use super::super::LastResponse;
    use proptest::prelude::*;

    fn kept(body: &[u8], headers: &[(String, String)]) -> (Vec<u8>, Vec<(String, String)>) {
        let last = LastResponse::new(body, headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let text: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert_eq!(last.headers_size(), (headers.len(), text));
        let read = last
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        (last.body().to_vec(), read)
    }

    #[test]
    fn nothing_kept_is_no_allocation() {
        let none = LastResponse::new(b"", std::iter::empty());
        assert!(none.is_none());
        assert_eq!(none.body(), b"");
        assert_eq!(none.headers().len(), 0);
    }

    #[test]
    fn a_header_without_a_body_and_empty_names_and_values_read_back() {
        let headers = vec![
            ("content-length".to_owned(), "0".to_owned()),
            (String::new(), String::new()),
            ("x-ünïcode".to_owned(), "wert ✓".to_owned()),
        ];
        assert_eq!(kept(b"", &headers), (Vec::new(), headers.clone()));
        assert_eq!(kept(b"ok", &[]), (b"ok".to_vec(), Vec::new()));
    }

    proptest! {
        /// Whatever a response leaves within the limits reads back as it was given.
        #[test]
        fn body_and_headers_read_back_as_given(
            body in prop::collection::vec(any::<u8>(), 0..crate::RESPONSE_BODY_BYTES_MAX),
            headers in prop::collection::vec((".{0,12}", ".{0,40}"), 0..crate::RESPONSE_HEADERS_MAX),
        ) {
            prop_assert_eq!(kept(&body, &headers), (body.clone(), headers.clone()));
        }
    }
}

/// A dispatcher whose driver reports envelopes, holding one event for three webhooks
/// and one for one, not yet journaled.
fn reported_events() -> Dispatcher {
    let mut d = Dispatcher::new(DispatcherConfig::default(), T0);
    d.report_envelopes();
    for name in ["wh_a", "wh_b", "wh_c"] {
        d.upsert_webhook(T0, tenant("acme"), wh(name), spec(&["order.*"]))
            .unwrap();
    }
    d.upsert_webhook(T0, tenant("solo"), wh("wh_s"), spec(&["order.*"]))
        .unwrap();
    d.accept_event(T0, &tenant("acme"), event("evt_1", "order.created"))
        .unwrap();
    d.accept_event(T0, &tenant("solo"), event("evt_2", "order.created"))
        .unwrap();
    d
}

#[test]
fn a_reported_envelope_is_not_copied_before_its_position_and_reaches_every_delivery() {
    let mut d = reported_events();
    for id in 1..=4 {
        let event = &d.deliveries.get(&DeliveryId(id)).unwrap().event;
        assert!(event.body.is_awaiting(), "delivery {id} holds no copy yet");
    }
    let mut segments = Segments::default();
    pump_stored(&mut d, &mut segments);
    for id in 1..=4 {
        let event = &d.deliveries.get(&DeliveryId(id)).unwrap().event;
        assert!(
            matches!(event.body, EventBody::Stored(at) if at.pos().segment == 1),
            "delivery {id} reads its body from the journal"
        );
    }
    d.tick_with(T0, &segments);
    let sends = pump_stored(&mut d, &mut segments);
    assert_eq!(sends.len(), 4);
    for send in &sends {
        assert!(send.body.windows(7).any(|w| w == br#"{"n":1}"#), "{send:?}");
    }
}

#[test]
fn a_reported_envelope_without_a_position_is_kept_in_memory() {
    let mut d = reported_events();
    while let Some(command) = d.pop_command() {
        if let Command::Append { id, record } = command {
            if let Record::EventAccepted(event) = &record {
                d.body_kept(id, &event.body);
                // Reported once: a second report changes nothing.
                d.body_kept(id, b"{}");
            }
            d.records_durable(id);
        }
    }
    for id in 1..=4 {
        let event = &d.deliveries.get(&DeliveryId(id)).unwrap().event;
        assert!(matches!(event.body, EventBody::Held(_)), "delivery {id}");
    }
    d.tick(T0);
    let mut sends = 0;
    while let Some(command) = d.pop_command() {
        if let Command::Send(send) = command {
            assert!(send.body.windows(7).any(|w| w == br#"{"n":1}"#), "{send:?}");
            sends += 1;
        }
    }
    assert_eq!(sends, 4);
}

#[test]
#[should_panic(expected = "Dispatcher::report_envelopes")]
fn an_envelope_promised_and_never_reported_stops_the_dispatcher() {
    let mut d = reported_events();
    while let Some(command) = d.pop_command() {
        if let Command::Append { id, .. } = command {
            d.records_durable(id);
        }
    }
    d.tick(T0);
}

#[test]
fn a_purged_tenant_leaves_no_log_or_keys_and_replay_agrees() {
    // A deleted webhook's pending deliveries end one per tick.
    let config = DispatcherConfig {
        endings_per_tick_max: 1,
        ..DispatcherConfig::default()
    };
    let (acme, initech) = (tenant("acme"), tenant("initech"));
    let mut drv = and_another_tenant(config.clone(), spec(&["*"]), &initech);
    let mut acme_deliveries = Vec::new();
    for (i, t) in [&acme, &acme, &initech].into_iter().enumerate() {
        drv.d
            .accept_event(drv.now, t, keyed(&format!("e{i}"), "k0", 1))
            .unwrap_or_else(|e| panic!("event {i}: {e}"));
    }
    for req in drv.step() {
        drv.reply(&req, status(if req.attempt == 1 { 200 } else { 500 }));
        if drv.d.delivery(&acme, req.delivery).is_some() {
            acme_deliveries.push(req.delivery);
        }
    }
    drv.step();
    // The key's repeat is a duplicate while remembered (the second acme event was one).
    assert_eq!(acme_deliveries.len(), 1);
    assert!(
        drv.d
            .accept_event(drv.now, &acme, keyed("e0", "k0", 1))
            .unwrap()
            .duplicate
    );

    let refused = drv.d.purge_tenant(drv.now, &acme).unwrap_err();
    assert!(
        matches!(refused, OpError::TenantHasWebhooks { webhooks: 1, .. }),
        "{refused}"
    );
    // Deliveries in flight when their webhook goes are pending until the ending ends them.
    drv.d
        .accept_event(drv.now, &acme, event("e8", "a.b"))
        .unwrap();
    drv.d
        .accept_event(drv.now, &acme, event("e9", "a.b"))
        .unwrap();
    let in_flight = drv.step();
    assert_eq!(in_flight.len(), 2);
    acme_deliveries.extend(in_flight.iter().map(|req| req.delivery));
    drv.d.delete_webhook(drv.now, &acme, &wh("w1")).unwrap();
    let busy = drv.d.purge_tenant(drv.now, &acme).unwrap_err();
    assert!(
        matches!(busy, OpError::TenantBusy { pending: 2, .. }),
        "{busy}"
    );
    drv.step();
    for req in &in_flight {
        let ended = drv.d.delivery(&acme, req.delivery).unwrap();
        assert_eq!(ended.error, Some(DeliveryError::WebhookDeleted));
    }

    let before_purge = drv.records.len();
    let checkpoint = drv.d.checkpoint(drv.now);
    let purge = drv.d.purge_tenant(drv.now, &acme).unwrap();
    assert_eq!(
        (purge.deliveries, purge.idempotency_keys, purge.done),
        (3, 1, true)
    );
    drv.step();
    assert!(matches!(drv.records.last(), Some(Record::TenantPurged(r)) if r.tenant == "acme"));
    for id in &acme_deliveries {
        assert!(
            drv.d.delivery(&acme, *id).is_none(),
            "delivery {id} outlived its tenant"
        );
    }
    let query =
        |d: &Dispatcher, t: &TenantId| d.deliveries(&DeliveryQuery::tenant(t.clone())).items.len();
    assert_eq!(query(&drv.d, &acme), 0);
    assert_eq!(query(&drv.d, &initech), 1, "another tenant's log stays");
    // The key is forgotten for acme only: the same publish is a new event now.
    assert!(
        drv.d
            .accept_event(drv.now, &initech, keyed("e2", "k0", 1))
            .unwrap()
            .duplicate
    );
    let again = drv
        .d
        .accept_event(drv.now, &acme, keyed("e0", "k0", 1))
        .unwrap();
    assert!(!again.duplicate);
    drv.step();

    // Replayed from the start, and from the checkpoint taken before the purge.
    let live = snapshot(&drv.d);
    let replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &live);
    let mut from_checkpoint = vec![checkpoint];
    from_checkpoint.extend(drv.records[before_purge..].iter().cloned());
    let replayed = replayed_like(config, &from_checkpoint, &drv.d);
    assert_same(&snapshot(&replayed), &live);
    assert_eq!(query(&replayed, &acme), 0);
}

/// A purge between a checkpoint's parts drops deliveries the checkpoint has yet to write:
/// the parts hold them as they were when it began, and the purge journaled after it
/// drops them again on replay.
#[test]
fn a_purge_between_a_checkpoints_parts_replays_to_the_live_state() {
    let config = DispatcherConfig::default();
    let (acme, initech) = (tenant("acme"), tenant("initech"));
    let mut drv = and_another_tenant(config.clone(), spec(&["*"]), &initech);
    for n in 0..30 {
        for t in [&acme, &initech] {
            drv.d
                .accept_event(drv.now, t, keyed(&format!("e{n}"), &format!("k{n}"), 1))
                .unwrap();
        }
    }
    for req in drv.step() {
        drv.reply(
            &req,
            status(if req.delivery.0 % 4 == 0 { 400 } else { 200 }),
        );
    }
    drv.step();
    let covers = drv.records.len();
    let at_begin = snapshot(&drv.d);
    let mut checkpoint = drv.d.begin_checkpoint(drv.now, 1);
    let mut parts = Vec::new();
    let mut turn = 0;
    let mut purged = 0;
    while let Some(part) = drv.d.checkpoint_part(&mut checkpoint, &Held) {
        parts.push(part);
        if !checkpoint.registry_written() {
            continue;
        }
        turn += 1;
        if turn == 2 {
            drv.d.delete_webhook(drv.now, &initech, &wh("w1")).unwrap();
            drv.step();
            purged = drv.d.purge_tenant(drv.now, &initech).unwrap().deliveries;
            drv.step();
            assert!(
                drv.d.checkpoint_copies() > 0,
                "purged deliveries were copied"
            );
        }
    }
    assert_eq!(purged, 30, "every initech delivery was finished");
    drv.d.finish_checkpoint(checkpoint);
    let mut fresh = Dispatcher::new(config.clone(), T0);
    for part in &parts {
        fresh.replay(part).unwrap();
    }
    assert_same(&snapshot(&fresh), &at_begin);
    for record in &drv.records[covers..] {
        fresh.replay(record).unwrap();
    }
    assert_same(&snapshot(&fresh), &snapshot(&drv.d));
    assert_eq!(fresh.stats(), drv.d.stats());
    assert!(fresh
        .deliveries(&DeliveryQuery::tenant(initech.clone()))
        .items
        .is_empty());
    assert_eq!(
        fresh.deliveries(&DeliveryQuery::tenant(acme)).items.len(),
        30
    );
}

/// A tenant whose log and keys pass one step's bounds is purged in several steps, each
/// its own record, and a replay of them (from the start or from a checkpoint taken
/// between two) reaches the live state.
#[test]
fn a_large_tenant_is_purged_in_bounded_steps() {
    let config = DispatcherConfig {
        log_finished_per_tenant_max: 2 * PURGE_DELIVERIES_PER_STEP,
        ..DispatcherConfig::default()
    };
    let (acme, other) = (tenant("acme"), tenant("other"));
    let mut drv = and_another_tenant(config.clone(), spec(&["order.*"]), &other);
    // Deliveries for the first ones; keys only for the rest (no webhook matches them).
    let delivered = PURGE_DELIVERIES_PER_STEP + 100;
    let keyed_only = PURGE_KEYS_PER_STEP + 50 - delivered;
    for n in 0..delivered + keyed_only {
        let event_type = if n < delivered {
            "order.created"
        } else {
            "note.added"
        };
        let mut e = keyed(&format!("e{n}"), &format!("k{n}"), 1);
        e.event_type = EventType::parse(event_type).unwrap();
        drv.d.accept_event(drv.now, &acme, e).unwrap();
        if n % 7 == 0 {
            drv.d
                .accept_event(drv.now, &other, event(&format!("o{n}"), "a.b"))
                .unwrap();
        }
        if n % 512 == 511 {
            for req in drv.step() {
                drv.reply(&req, status(200));
            }
            drv.now += 1;
        }
    }
    for req in drv.step() {
        drv.reply(&req, status(200));
    }
    drv.step();
    drv.d.delete_webhook(drv.now, &acme, &wh("w1")).unwrap();
    drv.step();
    let other_before = drv.d.deliveries(&DeliveryQuery::tenant(other.clone()));

    let first = drv.d.purge_tenant(drv.now, &acme).unwrap();
    assert_eq!(
        (first.deliveries, first.idempotency_keys, first.done),
        (PURGE_DELIVERIES_PER_STEP, PURGE_KEYS_PER_STEP, false)
    );
    drv.step();
    let between = drv.records.len();
    let checkpoint = drv.d.checkpoint(drv.now);
    let second = drv.d.purge_tenant(drv.now, &acme).unwrap();
    assert_eq!(
        (second.deliveries, second.idempotency_keys, second.done),
        (100, 50, true)
    );
    drv.step();
    let third = drv.d.purge_tenant(drv.now, &acme).unwrap();
    assert_eq!(
        (third.deliveries, third.idempotency_keys, third.done),
        (0, 0, true)
    );
    drv.step();
    assert!(drv
        .d
        .deliveries(&DeliveryQuery::tenant(acme.clone()))
        .items
        .is_empty());
    assert_eq!(drv.d.stats().idempotency_keys, 0, "other published no key");
    assert_eq!(
        drv.d.deliveries(&DeliveryQuery::tenant(other.clone())),
        other_before,
        "another tenant's log is untouched"
    );

    let live = snapshot(&drv.d);
    let replayed = replayed_like(config.clone(), &drv.records, &drv.d);
    assert_same(&snapshot(&replayed), &live);
    let mut from_checkpoint = vec![checkpoint];
    from_checkpoint.extend(drv.records[between..].iter().cloned());
    let replayed = replayed_like(config, &from_checkpoint, &drv.d);
    assert_same(&snapshot(&replayed), &live);
}

/// A re-send in bounded steps looks at no more than its scan bound each, goes on from
/// where the last stopped, and re-queues what one whole look would.
#[test]
fn a_resend_in_steps_requeues_what_one_whole_look_does() {
    let mut drv = one_webhook(DispatcherConfig::default(), spec(&["*"]));
    let t = tenant("acme");
    drv.d
        .upsert_webhook(T0, t.clone(), wh("w2"), spec(&["*"]))
        .unwrap();
    drv.step();
    // Twelve events to both webhooks, accepted a minute apart: w1 fails them all, w2
    // takes them.
    for n in 0..12 {
        drv.d
            .accept_event(drv.now, &t, event(&format!("e{n}"), "a.b"))
            .unwrap();
        for req in drv.step() {
            let to_w1 = drv.d.delivery(&t, req.delivery).unwrap().webhook == wh("w1");
            drv.reply(&req, status(if to_w1 { 400 } else { 200 }));
        }
        drv.step();
        drv.now += MIN;
    }
    let since = T0 + 3 * MIN;
    let failed_since: Vec<DeliveryId> = drv
        .d
        .deliveries(&DeliveryQuery::tenant(t.clone()))
        .items
        .iter()
        .filter(|d| d.webhook == wh("w1") && d.accepted_at_ms >= since)
        .map(|d| d.id)
        .collect();
    assert_eq!(failed_since.len(), 9);

    let mut whole = replayed_like(DispatcherConfig::default(), &drv.records, &drv.d);
    assert_eq!(
        whole.resend_failed(drv.now, &t, &wh("w1"), since).unwrap(),
        9
    );

    // Steps of four deliveries looked at (two webhooks' each): six steps.
    let (mut after, mut steps, mut requeued) = (None, 0, 0);
    loop {
        let step = drv
            .d
            .resend_failed_step(drv.now, &t, &wh("w1"), since, after, RESEND_MAX, 4)
            .unwrap();
        assert!(step.requeued <= 2, "{step:?}");
        requeued += step.requeued;
        steps += 1;
        match step.next_after {
            Some(next) => {
                assert!(after.is_none_or(|a| next > a), "it goes on");
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!((requeued, steps), (9, 6));
    let pending: Vec<DeliveryId> = drv
        .d
        .deliveries(&DeliveryQuery::tenant(t.clone()))
        .items
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .map(|d| d.id)
        .collect();
    assert_eq!(pending, failed_since);
    assert_same(&snapshot(&drv.d), &snapshot(&whole));

    // At most `most`, and then nothing says to go on.
    let mut drv2 = replayed_like(DispatcherConfig::default(), &drv.records, &drv.d);
    let step = drv2
        .resend_failed_step(drv.now, &t, &wh("w1"), 0, None, 1, 100)
        .unwrap();
    assert_eq!((step.requeued, step.next_after), (1, None));
}
