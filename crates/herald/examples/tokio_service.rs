//! Herald embedded in a small tokio service.
//!
//! ```text
//! cargo run -p herald --example tokio_service -- [ORDERS]
//! ```
//!
//! The service accepts TCP connections on loopback and reads one order per line
//! (`<order id> <amount>`); each order is published as an `order.created` event with
//! [`Herald::publish_async`] and acknowledged to the client (`ack <event id>`) only once
//! the event is durable. A timer task publishes a `service.heartbeat` event every 100 ms.
//! A client task sends the orders, and the program exits by itself once every event has
//! reached the webhook receiver (a herald-sink on loopback), or after 20 seconds.
//!
//! The engine's threads are not tokio's: `publish_async` hands the event over through a
//! bounded queue and resolves when the shard's journal is synced, so no tokio worker
//! blocks on the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::{Event, EventFilter, EventType, Herald, Scheme, TenantId, Url, WebhookSpec};
use herald_sink::Sink;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The whole run is bounded by this.
const RUN_MAX: Duration = Duration::from_secs(20);
/// Most orders one run sends.
const ORDERS_MAX: u64 = 100_000;
/// Longest order line the service reads; longer lines end the connection.
const LINE_BYTES_MAX: usize = 1024;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Failure> {
    let orders: u64 = match std::env::args().nth(1) {
        Some(text) => text.parse()?,
        None => 200,
    };
    if orders == 0 || orders > ORDERS_MAX {
        return Err(format!("ORDERS must be 1..={ORDERS_MAX}").into());
    }
    match tokio::time::timeout(RUN_MAX, run(orders)).await {
        Ok(result) => result,
        Err(_) => Err(format!("did not finish within {RUN_MAX:?}").into()),
    }
}

async fn run(orders: u64) -> Result<(), Failure> {
    // The receiving side: a webhook sink on loopback (std threads, not tokio's).
    let sink = Sink::builder().start()?;
    let dir = tempfile::tempdir()?;
    let herald = Herald::builder()
        .data_dir(dir.path())
        .shards(1)
        .allow_cidr("127.0.0.0/8")
        .start()?;
    let tenant = TenantId::parse("shop")?;
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[1; 32]);
    for (path, filter) in [("/orders", "order.*"), ("/heartbeats", "service.*")] {
        let spec = WebhookSpec::new(
            Url::parse(&sink.url(path))?,
            vec![EventFilter::parse(filter)?],
            Scheme::Standard,
            secret.clone(),
        );
        herald.create_webhook(&tenant, spec)?;
    }

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("order service on {addr}, webhooks to {}", sink.url("/"));

    // Accept loop: one task per connection.
    let accept = {
        let herald = herald.clone();
        let tenant = tenant.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                tokio::spawn(serve(stream, herald.clone(), tenant.clone()));
            }
        })
    };

    // Timer task: a heartbeat event every 100 ms until stopped.
    let heartbeats = Arc::new(AtomicU64::new(0));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let timer = {
        let herald = herald.clone();
        let tenant = tenant.clone();
        let heartbeats = heartbeats.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            let event_type = EventType::parse("service.heartbeat")?;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                let n = heartbeats.load(Ordering::Relaxed);
                let data = serde_json::json!({ "beat": n });
                herald
                    .publish_async(&tenant, Event::new(event_type.clone(), &data))
                    .await?;
                heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), Failure>(())
        })
    };

    // The client: sends every order on one connection, reads every acknowledgement.
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        for n in 0..orders {
            write
                .write_all(format!("ord_{n} {}.{:02}\n", 10 + n % 90, n % 100).as_bytes())
                .await?;
        }
        write.shutdown().await?;
        Ok::<(), std::io::Error>(())
    });
    let mut acks = BufReader::new(read).lines();
    let mut acknowledged = 0u64;
    while let Some(line) = acks.next_line().await? {
        if !line.starts_with("ack evt_") {
            return Err(format!("the service refused an order: {line}").into());
        }
        acknowledged += 1;
    }
    sender.await??;
    if acknowledged != orders {
        return Err(format!("{acknowledged} of {orders} orders acknowledged").into());
    }
    stop_tx.send(true)?;
    timer.await??;
    accept.abort();

    // Every event is durable; wait (off the async workers) for every delivery.
    let expected = orders + heartbeats.load(Ordering::Relaxed);
    let herald_for_shutdown = herald.clone();
    let delivered = tokio::task::spawn_blocking(move || {
        let stats = sink.wait_for(expected, Duration::from_secs(10));
        (
            stats,
            sink.requests_to("/orders").len(),
            sink.requests_to("/heartbeats").len(),
        )
    })
    .await?;
    let (stats, to_orders, to_heartbeats) = delivered;
    let stats = stats?;
    tokio::task::spawn_blocking(move || herald_for_shutdown.shutdown()).await??;
    println!(
        "{orders} orders acknowledged after durable publish; {} heartbeats; receiver got {} requests ({to_orders} orders, {to_heartbeats} heartbeats), {} answered 2xx",
        expected - orders,
        stats.requests,
        stats.successes()
    );
    Ok(())
}

/// One client connection: each line is an order, acknowledged once durable.
async fn serve(stream: TcpStream, herald: Herald, tenant: TenantId) -> Result<(), Failure> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let event_type = EventType::parse("order.created")?;
    while let Some(line) = lines.next_line().await? {
        if line.len() > LINE_BYTES_MAX {
            write.write_all(b"error line too long\n").await?;
            break;
        }
        let reply = match line.split_once(' ') {
            Some((order_id, amount)) => {
                let data = serde_json::json!({ "order_id": order_id, "amount": amount });
                match herald
                    .publish_async(&tenant, Event::new(event_type.clone(), &data))
                    .await
                {
                    Ok(event_id) => format!("ack {event_id}\n"),
                    Err(error) => format!("error {error}\n"),
                }
            }
            None => "error expected `<order id> <amount>`\n".to_string(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}
