//! Signing: one message at a time ([`Signer::sign_into`]) or many per call
//! ([`BatchSigner::sign_batch`]).

use std::fmt;
use std::sync::Arc;

use ring::hmac;

use crate::encoding::{push_ascii, push_base64, push_hex, unix_s_to_ticks, Decimal};
use crate::lanes;
use crate::secret::{signing_keys, HmacKey, SigningKey};
use crate::{Scheme, SecretError, SignedHeaders};

/// Longest message id accepted by [`validate_message_id`]: ids are sent in a header and
/// stored by receivers for de-duplication.
pub const MESSAGE_ID_BYTES_MAX: usize = 256;

/// Scratch memory a [`BatchSigner`] keeps between calls. Ed25519 signs a contiguous
/// `{id}.{ts}.{body}`, so the scratch grows to the largest such message; above this size it
/// is released after use so that one huge body does not pin its memory for good.
pub const SCRATCH_RETAINED_BYTES_MAX: usize = 1 << 20;

/// One message to sign. `id` must be a valid header value (see [`validate_message_id`]);
/// `url` is only signed by [`Scheme::Olo`] and must be the exact URL the request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Stable event id, sent to receivers for de-duplication (`webhook-id`,
    /// `X-Olo-Message-Id`).
    pub id: &'a str,
    /// Signing time, Unix seconds.
    pub timestamp_s: i64,
    /// The endpoint URL (signed by olo only).
    pub url: &'a str,
    /// The exact bytes of the request body.
    pub body: &'a [u8],
}

/// A message id that cannot be sent in a header (caller's error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageIdError {
    /// The id is empty.
    #[error("message id is empty")]
    Empty,
    /// Longer than [`MESSAGE_ID_BYTES_MAX`].
    #[error("message id is {bytes} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length.
        bytes: usize,
        /// [`MESSAGE_ID_BYTES_MAX`].
        max: usize,
    },
    /// Contains a byte other than visible ASCII (0x21..=0x7e); spaces and control bytes
    /// would corrupt the header or the signed content.
    #[error(
        "message id contains byte {byte:#04x} at offset {offset}; only visible ASCII is allowed"
    )]
    Byte {
        /// The offending byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
}

/// Checks that `id` can be used as [`Message::id`]: 1..=[`MESSAGE_ID_BYTES_MAX`] bytes of
/// visible ASCII. [`Signer::sign_into`] does not re-check (it has no error path, and the
/// engine's own ids are valid by construction); inputs from outside must pass this first.
pub fn validate_message_id(id: &str) -> Result<(), MessageIdError> {
    if id.is_empty() {
        return Err(MessageIdError::Empty);
    }
    if id.len() > MESSAGE_ID_BYTES_MAX {
        return Err(MessageIdError::TooLong {
            bytes: id.len(),
            max: MESSAGE_ID_BYTES_MAX,
        });
    }
    match id
        .bytes()
        .enumerate()
        .find(|(_, b)| !(0x21..=0x7e).contains(b))
    {
        Some((offset, byte)) => Err(MessageIdError::Byte { byte, offset }),
        None => Ok(()),
    }
}

struct Inner {
    scheme: Scheme,
    keys: Box<[SigningKey]>,
}

/// One webhook's signing setup: a scheme and 1..=[`crate::SECRETS_MAX`] live secrets, with
/// their key schedules computed once here (ring `hmac::Key`, `Ed25519KeyPair`) and never per
/// message.
///
/// Cloning is cheap (a reference count); `Signer` is `Send + Sync`. `Debug` never prints
/// secrets.
#[derive(Clone)]
pub struct Signer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.inner.scheme)
            .field("secrets", &self.inner.keys.len())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Parses the secrets of `scheme` (formats in the crate docs) and precomputes their key
    /// schedules. Requests will carry one signature per secret, in this order.
    pub fn new(scheme: Scheme, secrets: &[&str]) -> Result<Signer, SecretError> {
        let keys = signing_keys(&scheme, secrets)?.into_boxed_slice();
        Ok(Signer {
            inner: Arc::new(Inner { scheme, keys }),
        })
    }

    /// The scheme this signer uses.
    pub fn scheme(&self) -> &Scheme {
        &self.inner.scheme
    }

    /// Number of live secrets (= signatures per request).
    pub fn secret_count(&self) -> usize {
        self.inner.keys.len()
    }

    /// Whether `self` and `other` are clones of one signer (same key schedules).
    pub fn same_keys(&self, other: &Signer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Signs `msg`, replacing the contents of `out` with the headers to send.
    ///
    /// HMAC schemes allocate nothing once `out` has grown; ed25519 allocates one
    /// `{id}.{ts}.{body}` buffer per call (use [`BatchSigner`] to reuse it).
    pub fn sign_into(&self, msg: &Message<'_>, out: &mut SignedHeaders) {
        let mut scratch = Vec::new();
        self.sign_with_scratch(msg, out, &mut scratch, &[]);
    }

    /// Signs `msg` into `out`; `tags` holds the HMAC tags of its keys, in order, where
    /// they were computed already (empty: computed here).
    fn sign_with_scratch(
        &self,
        msg: &Message<'_>,
        out: &mut SignedHeaders,
        scratch: &mut Vec<u8>,
        tags: &[[u8; 32]],
    ) {
        out.clear();
        let inner = &*self.inner;
        match &inner.scheme {
            Scheme::Standard | Scheme::Ed25519 => {
                let ts = Decimal::new(msg.timestamp_s);
                out.push("webhook-id", msg.id.as_bytes());
                out.push("webhook-timestamp", ts.as_bytes());
                let text = out.start("webhook-signature");
                for (index, key) in inner.keys.iter().enumerate() {
                    if index > 0 {
                        text.push(' ');
                    }
                    match key {
                        SigningKey::Hmac(key) => {
                            text.push_str("v1,");
                            match tags.get(index) {
                                Some(tag) => push_base64(text, tag),
                                None => push_base64(
                                    text,
                                    standard_tag(&key.ring, msg.id, ts.as_bytes(), msg.body)
                                        .as_ref(),
                                ),
                            }
                        }
                        SigningKey::Ed25519(pair) => {
                            // ring's ed25519 hashes the message twice, so it needs it whole.
                            if index == 0 {
                                standard_content(scratch, msg.id, ts.as_bytes(), msg.body);
                            }
                            text.push_str("v1a,");
                            push_base64(text, pair.sign(scratch).as_ref());
                        }
                    }
                }
                out.finish();
            }
            Scheme::Stripe { header } => {
                let ts = Decimal::new(msg.timestamp_s);
                let text = out.start(header);
                text.push_str("t=");
                push_ascii(text, ts.as_bytes());
                for (index, key) in hmac_keys(&inner.keys).enumerate() {
                    text.push_str(",v1=");
                    match tags.get(index) {
                        Some(tag) => push_hex(text, tag),
                        None => push_hex(
                            text,
                            stripe_tag(&key.ring, ts.as_bytes(), msg.body).as_ref(),
                        ),
                    }
                }
                out.finish();
            }
            Scheme::Olo => {
                let ticks = Decimal::new(unix_s_to_ticks(msg.timestamp_s));
                out.push("X-Olo-Message-Id", msg.id.as_bytes());
                out.push("X-Olo-Timestamp", ticks.as_bytes());
                let text = out.start("X-Olo-Signature");
                for (index, key) in hmac_keys(&inner.keys).enumerate() {
                    if index > 0 {
                        text.push(',');
                    }
                    match tags.get(index) {
                        Some(tag) => push_base64(text, tag),
                        None => push_base64(
                            text,
                            olo_tag(&key.ring, msg.url, msg.body, msg.id, ticks.as_bytes())
                                .as_ref(),
                        ),
                    }
                }
                out.finish();
            }
        }
    }
}

// The signed content of each scheme is defined once, here, for the signer and the
// verifier alike.

/// `standard`: HMAC-SHA256 of `{id}.{ts}.{body}`.
pub(crate) fn standard_tag(key: &hmac::Key, id: &str, ts: &[u8], body: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    update_standard_prefix(&mut context, id, ts);
    context.update(body);
    context.sign()
}

/// `ed25519`: `{id}.{ts}.{body}` written whole into `out` (replacing its contents), since
/// ring's Ed25519 hashes the message twice and takes it as one slice.
pub(crate) fn standard_content(out: &mut Vec<u8>, id: &str, ts: &[u8], body: &[u8]) {
    out.clear();
    out.reserve(id.len() + ts.len() + body.len() + 2);
    out.extend_from_slice(id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(ts);
    out.push(b'.');
    out.extend_from_slice(body);
}

/// `stripe`: HMAC-SHA256 of `{ts}.{body}`.
pub(crate) fn stripe_tag(key: &hmac::Key, ts: &[u8], body: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(ts);
    context.update(b".");
    context.update(body);
    context.sign()
}

/// Feeds `{id}.{ts}.` to `context` in one call when it fits a stack buffer: each
/// `update` call has a fixed cost in ring (block bookkeeping), which is a visible share of
/// signing a small body.
fn update_standard_prefix(context: &mut hmac::Context, id: &str, ts: &[u8]) {
    let mut prefix = [0u8; MESSAGE_ID_BYTES_MAX + 22];
    let len = id.len() + ts.len() + 2;
    if len > prefix.len() {
        context.update(id.as_bytes());
        context.update(b".");
        context.update(ts);
        context.update(b".");
        return;
    }
    let (id_part, rest) = prefix.split_at_mut(id.len());
    id_part.copy_from_slice(id.as_bytes());
    rest[0] = b'.';
    rest[1..=ts.len()].copy_from_slice(ts);
    rest[ts.len() + 1] = b'.';
    context.update(&prefix[..len]);
}

/// The HMAC keys of a signer; HMAC schemes hold nothing else (an invariant of
/// [`signing_keys`]).
fn hmac_keys(keys: &[SigningKey]) -> impl Iterator<Item = &HmacKey> {
    keys.iter().filter_map(|key| match key {
        SigningKey::Hmac(key) => Some(key),
        SigningKey::Ed25519(_) => None,
    })
}

/// Olo's signed content is `"{url}\n{body}\n{message_id}\n{ticks}"`.
pub(crate) fn olo_tag(
    key: &hmac::Key,
    url: &str,
    body: &[u8],
    id: &str,
    ticks: &[u8],
) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(url.as_bytes());
    context.update(b"\n");
    context.update(body);
    context.update(b"\n");
    context.update(id.as_bytes());
    context.update(b"\n");
    context.update(ticks);
    context.sign()
}

/// Most body bytes [`BatchSigner::sign_batch`] loads into the cache ahead of hashing
/// them: a window's bodies must still be in the nearest caches when their turn comes
/// (server cores have 1–2 MiB of L2), and a window this size still holds ~200 bodies of
/// 1 KiB, enough to keep every miss slot busy.
const WARM_WINDOW_BYTES_MAX: usize = 256 * 1024;

/// Bytes between the loads of [`touch_lines`]: a cache line on every CPU Herald targets.
const CACHE_LINE_BYTES: usize = 64;

/// Loads one byte of each cache line of `bytes` (and the last byte) and returns them
/// folded together, for `black_box`. The loads do not depend on each other, so the
/// CPU has as many misses under way as it has slots for.
fn touch_lines(bytes: &[u8]) -> u8 {
    let mut folded = bytes.last().copied().unwrap_or(0);
    for line in bytes.chunks(CACHE_LINE_BYTES) {
        folded ^= line[0];
    }
    folded
}

/// Signs many `(signer, message)` pairs per call, reusing its scratch memory between
/// calls. Keep one per thread (it is `Send`, not shared).
///
/// Each signer's key schedules were computed once in [`Signer::new`], so a message costs
/// only its hash work: no key setup, and no allocation once the output buffers and the
/// scratch space have grown to the working size.
#[derive(Debug, Default)]
pub struct BatchSigner {
    scratch: Vec<u8>,
    /// The signed prefixes (`{id}.{ts}.`, `{ts}.`) of the jobs hashed in lanes.
    heads: Vec<u8>,
    /// One per HMAC tag hashed in lanes, in job order and each job's key order.
    units: Vec<Unit>,
    /// The tags of `units`, in their order.
    tags: Vec<[u8; 32]>,
}

/// One HMAC tag to compute in lanes: job `job`'s key `key` over `heads[head]`, the
/// job's body and `heads[tail]`.
#[derive(Clone, Debug)]
struct Unit {
    job: usize,
    key: usize,
    head: std::ops::Range<usize>,
    tail: std::ops::Range<usize>,
}

/// Fewest tags worth hashing in lanes: a message alone on the lanes costs more than
/// through ring, whose single stream is tighter.
const LANE_TAGS_MIN: usize = 2;

impl BatchSigner {
    /// A batch signer with empty scratch space.
    pub fn new() -> BatchSigner {
        BatchSigner::default()
    }

    /// Signs `jobs[i]` into `out[i]` for every `i`, replacing what `out[i]` held.
    ///
    /// # Panics
    ///
    /// If `out.len() != jobs.len()` (a caller bug: slice the pool to the batch).
    pub fn sign_batch(&mut self, jobs: &[(&Signer, Message<'_>)], out: &mut [SignedHeaders]) {
        assert_eq!(
            jobs.len(),
            out.len(),
            "sign_batch needs one output buffer per job"
        );
        // Bodies usually come cold from memory: an event is signed long after it was
        // written when deliveries wait in a backlog (a receiver that was down, a burst),
        // and a stored body is read through the journal's pages. Hashing reads a body a
        // block at a time, one miss after the other; touching a window of bodies first
        // puts their misses in flight together, and the hash then reads from the cache.
        let mut warmed = 0u8;
        let mut start = 0;
        while start < jobs.len() {
            let mut end = start;
            let mut window_bytes = 0;
            while let Some((_, msg)) = jobs.get(end) {
                if end > start && window_bytes + msg.body.len() > WARM_WINDOW_BYTES_MAX {
                    break;
                }
                window_bytes += msg.body.len();
                warmed ^= touch_lines(msg.body);
                end += 1;
            }
            self.hash_in_lanes(&jobs[start..end]);
            let mut next = 0;
            for (index, ((signer, msg), headers)) in jobs[start..end]
                .iter()
                .zip(&mut out[start..end])
                .enumerate()
            {
                let tags = self.units[next..]
                    .iter()
                    .take_while(|unit| unit.job == index)
                    .count();
                let tags = &self.tags[next..next + tags];
                next += tags.len();
                signer.sign_with_scratch(msg, headers, &mut self.scratch, tags);
            }
            start = end;
        }
        std::hint::black_box(warmed);
        if self.scratch.capacity() > SCRATCH_RETAINED_BYTES_MAX {
            self.scratch = Vec::new();
        }
        // The lanes' lists grow with the jobs of the largest window; one huge batch
        // does not pin them.
        if self.heads.capacity() > SCRATCH_RETAINED_BYTES_MAX
            || self.units.capacity() * std::mem::size_of::<Unit>() > SCRATCH_RETAINED_BYTES_MAX
        {
            self.heads = Vec::new();
            self.units = Vec::new();
            self.tags = Vec::new();
        }
    }

    /// Computes in lanes the HMAC tags of `jobs` whose keys have lane states (standard,
    /// stripe and olo: their content is text, the body, and for olo text again), into
    /// `tags` (`units` says whose); ed25519, and a lone tag, are left to ring.
    fn hash_in_lanes(&mut self, jobs: &[(&Signer, Message<'_>)]) {
        self.heads.clear();
        self.units.clear();
        self.tags.clear();
        for (job, (signer, msg)) in jobs.iter().enumerate() {
            let keys = &signer.inner.keys;
            let all_in_lanes = keys
                .iter()
                .all(|key| matches!(key, SigningKey::Hmac(HmacKey { lanes: Some(_), .. })));
            if !all_in_lanes {
                continue;
            }
            let from = self.heads.len();
            let ts = Decimal::new(msg.timestamp_s);
            match &signer.inner.scheme {
                Scheme::Standard => {
                    self.heads.extend_from_slice(msg.id.as_bytes());
                    self.heads.push(b'.');
                    self.heads.extend_from_slice(ts.as_bytes());
                    self.heads.push(b'.');
                }
                Scheme::Stripe { .. } => {
                    self.heads.extend_from_slice(ts.as_bytes());
                    self.heads.push(b'.');
                }
                Scheme::Olo => self.heads.extend_from_slice(msg.url.as_bytes()),
                Scheme::Ed25519 => continue,
            }
            let head = from..self.heads.len();
            // Olo's content goes on after the body: `\n{id}\n{ticks}` (see `olo_tag`).
            if matches!(signer.inner.scheme, Scheme::Olo) {
                self.heads.push(b'\n');
                let ticks = Decimal::new(unix_s_to_ticks(msg.timestamp_s));
                let tail_from = self.heads.len();
                self.heads.push(b'\n');
                self.heads.extend_from_slice(msg.id.as_bytes());
                self.heads.push(b'\n');
                self.heads.extend_from_slice(ticks.as_bytes());
                let head = from..tail_from;
                let tail = tail_from..self.heads.len();
                self.units.extend((0..keys.len()).map(|key| Unit {
                    job,
                    key,
                    head: head.clone(),
                    tail: tail.clone(),
                }));
                continue;
            }
            self.units.extend((0..keys.len()).map(|key| Unit {
                job,
                key,
                head: head.clone(),
                tail: 0..0,
            }));
        }
        if self.units.len() < LANE_TAGS_MIN {
            self.units.clear();
            return;
        }
        let (units, heads) = (&self.units, &self.heads);
        lanes::tags(
            units.len(),
            |index| {
                let unit = &units[index];
                let (signer, msg) = &jobs[unit.job];
                let SigningKey::Hmac(HmacKey {
                    lanes: Some(state), ..
                }) = &signer.inner.keys[unit.key]
                else {
                    unreachable!("only keys with lane states are made units")
                };
                lanes::Job {
                    state,
                    head: &heads[unit.head.clone()],
                    body: msg.body,
                    tail: &heads[unit.tail.clone()],
                }
            },
            &mut self.tags,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coalesced prefix and its fallback for ids too long for the stack buffer both
    /// feed exactly `{id}.{ts}.`.
    #[test]
    fn standard_prefix_equals_separate_updates() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"prefix test key");
        for id_len in [0, 1, MESSAGE_ID_BYTES_MAX, MESSAGE_ID_BYTES_MAX + 1, 1000] {
            let id = "i".repeat(id_len);
            for ts in [0i64, 1_614_265_330, i64::MIN] {
                let ts = Decimal::new(ts);
                let mut coalesced = hmac::Context::with_key(&key);
                update_standard_prefix(&mut coalesced, &id, ts.as_bytes());
                coalesced.update(b"body");
                let mut expected = Vec::new();
                expected.extend_from_slice(id.as_bytes());
                expected.push(b'.');
                expected.extend_from_slice(ts.as_bytes());
                expected.extend_from_slice(b".body");
                assert_eq!(
                    coalesced.sign().as_ref(),
                    hmac::sign(&key, &expected).as_ref(),
                    "id of {id_len} bytes"
                );
            }
        }
    }

    #[test]
    fn message_ids() {
        let long = "m".repeat(MESSAGE_ID_BYTES_MAX + 1);
        let at_max = "m".repeat(MESSAGE_ID_BYTES_MAX);
        let cases: &[(&str, Result<(), MessageIdError>)] = &[
            ("msg_p5jXN8AQM9LWM0D4loKWxJek", Ok(())),
            ("f8dac5dd-d3b2-476c-b969-a668c699637c", Ok(())),
            (&at_max, Ok(())),
            ("", Err(MessageIdError::Empty)),
            (
                &long,
                Err(MessageIdError::TooLong {
                    bytes: MESSAGE_ID_BYTES_MAX + 1,
                    max: MESSAGE_ID_BYTES_MAX,
                }),
            ),
            (
                "msg 1",
                Err(MessageIdError::Byte {
                    byte: b' ',
                    offset: 3,
                }),
            ),
            (
                "msg\r\nX-Evil: 1",
                Err(MessageIdError::Byte {
                    byte: b'\r',
                    offset: 3,
                }),
            ),
            (
                "msg_é",
                Err(MessageIdError::Byte {
                    byte: 0xc3,
                    offset: 4,
                }),
            ),
        ];
        for (id, expected) in cases {
            assert_eq!(&validate_message_id(id), expected, "{id:?}");
        }
    }

    /// Bodies are warmed and signed a window at a time: every job across window ends
    /// (one body larger than a window alone, empty ones, a window of one) is signed
    /// into its own output, as it would be on its own.
    #[test]
    fn batch_windows_sign_every_job_into_its_own_output() {
        let signer = Signer::new(
            Scheme::Standard,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        )
        .unwrap();
        let half = WARM_WINDOW_BYTES_MAX / 2;
        let sizes = [
            half + 1,
            half + 1,
            WARM_WINDOW_BYTES_MAX + 5,
            0,
            10,
            half,
            half,
            1,
            WARM_WINDOW_BYTES_MAX,
            3,
        ];
        let bodies: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|b| (b * 31 + i) as u8).collect())
            .collect();
        let ids: Vec<String> = (0..bodies.len()).map(|i| format!("msg_{i}")).collect();
        let jobs: Vec<(&Signer, Message<'_>)> = bodies
            .iter()
            .zip(&ids)
            .map(|(body, id)| {
                (
                    &signer,
                    Message {
                        id,
                        timestamp_s: 1_700_000_000,
                        url: "",
                        body,
                    },
                )
            })
            .collect();
        let mut out = vec![SignedHeaders::new(); jobs.len()];
        BatchSigner::new().sign_batch(&jobs, &mut out);
        assert_signed_one_at_a_time(&jobs, &out);
    }

    /// Each job's headers in `out` are those signing it alone gives.
    fn assert_signed_one_at_a_time(jobs: &[(&Signer, Message<'_>)], out: &[SignedHeaders]) {
        let pairs = |h: &SignedHeaders| {
            h.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        for (index, ((signer, msg), headers)) in jobs.iter().zip(out).enumerate() {
            let mut single = SignedHeaders::new();
            signer.sign_into(msg, &mut single);
            assert_eq!(pairs(headers), pairs(&single), "job {index}");
        }
    }

    /// Batches that mix what the lanes hash (standard, stripe and olo, one key or eight,
    /// ids up to the longest, an olo URL that ends past a block) with what ring signs
    /// (ed25519), and a batch with a single tag for the lanes (left to ring), sign every
    /// job as one at a time would; the lanes run exactly where they should.
    #[test]
    fn mixed_batches_sign_in_lanes_and_through_ring_as_one_at_a_time() {
        let secrets = |scheme: &Scheme, count: u8| -> Vec<String> {
            (0..count)
                .map(|i| crate::generate_secret(scheme, &[i + 1; 32]))
                .collect()
        };
        let signer = |scheme: Scheme, count: u8| {
            let owned = secrets(&scheme, count);
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            Signer::new(scheme, &refs).unwrap()
        };
        let standard_one = signer(Scheme::Standard, 1);
        let standard_eight = signer(Scheme::Standard, crate::SECRETS_MAX as u8);
        let stripe_one = signer(Scheme::stripe(), 1);
        let olo = signer(Scheme::Olo, 2);
        let ed25519 = signer(Scheme::Ed25519, 1);
        let ids = [
            "m".to_string(),
            "msg_0123".to_string(),
            "i".repeat(MESSAGE_ID_BYTES_MAX),
        ];
        let bodies: Vec<Vec<u8>> = [0usize, 63, 1000]
            .iter()
            .map(|&len| (0..len).map(|b| (b * 7 + len) as u8).collect())
            .collect();
        let urls = [
            "https://example.com/hook".to_string(),
            format!("https://example.com/{}", "p".repeat(100)),
        ];
        let message = |i: usize| Message {
            id: &ids[i % ids.len()],
            timestamp_s: 1_700_000_000 + i as i64,
            url: &urls[i % urls.len()],
            body: &bodies[i % bodies.len()],
        };
        let one_lane_tag = vec![
            (&ed25519, message(0)),
            (&standard_one, message(1)),
            (&ed25519, message(2)),
        ];
        let all: Vec<(&Signer, Message<'_>)> = (0..30)
            .map(|i| {
                let signer = [&standard_one, &olo, &standard_eight, &ed25519, &stripe_one][i % 5];
                (signer, message(i))
            })
            .collect();
        let lanes_run = lanes_available();
        for (jobs, lane_tags) in [(&one_lane_tag, 0), (&all, 6 * (1 + 2 + 8 + 1))] {
            let mut batch = BatchSigner::new();
            let mut out = vec![SignedHeaders::new(); jobs.len()];
            batch.sign_batch(jobs, &mut out);
            assert_eq!(
                batch.tags.len(),
                if lanes_run { lane_tags } else { 0 },
                "tags hashed in lanes"
            );
            assert_signed_one_at_a_time(jobs, &out);
        }
    }

    /// Whether this CPU runs the lanes (a key gets lane states).
    fn lanes_available() -> bool {
        let available = crate::hmac_lanes();
        assert_eq!(
            available,
            crate::lanes::HmacState::new(b"key").is_some(),
            "keys get lane states exactly where the lanes run"
        );
        if !available {
            eprintln!("this CPU lacks the SHA extensions: every tag is ring's");
        }
        available
    }

    #[test]
    fn batch_scratch_is_released_above_its_cap() {
        let signer = Signer::new(
            Scheme::Ed25519,
            &["whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="],
        )
        .unwrap();
        let small = vec![b'x'; 1024];
        let big = vec![b'x'; SCRATCH_RETAINED_BYTES_MAX + 1];
        let mut batch = BatchSigner::new();
        let mut out = [SignedHeaders::new()];
        let msg = |body| Message {
            id: "m",
            timestamp_s: 1,
            url: "",
            body,
        };
        batch.sign_batch(&[(&signer, msg(&small))], &mut out);
        assert!(batch.scratch.capacity() >= small.len());
        batch.sign_batch(&[(&signer, msg(&big))], &mut out);
        assert_eq!(batch.scratch.capacity(), 0);
    }

    #[test]
    #[should_panic(expected = "one output buffer per job")]
    fn batch_needs_one_output_per_job() {
        let signer = Signer::new(Scheme::Olo, &["s"]).unwrap();
        let msg = Message {
            id: "m",
            timestamp_s: 1,
            url: "",
            body: b"",
        };
        BatchSigner::new().sign_batch(&[(&signer, msg)], &mut []);
    }
}
