//! Encoding one event's envelope (`encode_envelope`): the `data` member's syntax and shape
//! checks plus the envelope's own members, once per accepted event on the shard's thread.
//!
//! Two 1 KiB payloads: the harness's (a few numbers and one long padding string) and an
//! order-like object of many short strings and numbers, the shape platforms publish.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_core::{encode_envelope, EventId, EventType, NewEvent, TenantId};
use std::hint::black_box;

/// The harness's payload: `{"herald_sent_ns":…,"seq":…,"pad":"xxx…"}` of `bytes` bytes.
fn padded(bytes: usize) -> Vec<u8> {
    let mut data = String::from("{\"herald_sent_ns\":1764633600123456789,\"seq\":42,\"pad\":\"");
    let pad = bytes.saturating_sub(data.len() + 2);
    data.extend(std::iter::repeat_n('x', pad));
    data.push_str("\"}");
    data.into_bytes()
}

/// An order of line items, each a handful of short strings and numbers, to ~`bytes`.
fn order(bytes: usize) -> Vec<u8> {
    let mut data = String::from(
        "{\"order_id\":\"ord_8f2c1a\",\"store\":{\"id\":\"st_12\",\"name\":\"Main St\"},\"items\":[",
    );
    let mut n = 0;
    while data.len() + 120 < bytes {
        if n > 0 {
            data.push(',');
        }
        data.push_str(&format!(
            "{{\"sku\":\"sku-{n:04}\",\"name\":\"Item \\u00e9 {n}\",\"qty\":{},\"price\":{}.{:02},\"mods\":[]}}",
            n % 3 + 1,
            n * 7 % 40 + 3,
            n * 13 % 100
        ));
        n += 1;
    }
    data.push_str("],\"total\":128.5,\"paid\":true,\"note\":null}");
    data.into_bytes()
}

fn event(data: Vec<u8>) -> NewEvent {
    NewEvent {
        id: EventId::parse("evt_01JD8Y3M6Q2W5R7T9V").unwrap(),
        event_type: EventType::parse("order.created").unwrap(),
        api_version: "2024-06-01".to_string(),
        created_at_ms: 1_764_633_600_123,
        location_id: None,
        data,
        idempotency: None,
    }
}

fn bench(c: &mut Criterion) {
    let tenant = TenantId::parse("acme").unwrap();
    let mut group = c.benchmark_group("encode_envelope");
    for (name, data) in [("padded_1k", padded(1024)), ("order_1k", order(1024))] {
        let event = event(data);
        serde_json::from_slice::<serde_json::Value>(&event.data).expect("valid JSON");
        group.throughput(Throughput::Bytes(event.data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| encode_envelope(black_box(&tenant), black_box(&event)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
