//! The API without a listener: raw request bytes in, raw answer bytes out.
//!
//! [`Offline`] runs the same application as [`crate::Server`] (engine, key store,
//! routes) and feeds each exchange through the same connection handler the listener
//! uses, over an in-memory stream instead of a socket: HTTP parsing, limits, pipelining,
//! routing and answer encoding are all the server's own. Only the accept loop, the
//! connection cap and TLS are left out. The fuzz target `api_request`
//! (`crates/herald-api/fuzz`) drives it.
//!
//! The engine is real: webhooks created through it are delivered to their URLs like the
//! server's, under the same egress guard. Run it where that is acceptable (the fuzz
//! target runs in a network namespace of its own).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::routes::App;
use crate::{prepare, server, Config, Prepared, StartError};

/// Bytes buffered in each direction of the in-memory stream.
const STREAM_BUFFER_BYTES: usize = 64 * 1024;
/// Most answer bytes kept from one exchange; the rest is read and dropped, so that a
/// large answer cannot stall the handler.
const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The peer address the handler sees for in-memory exchanges.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A started application that answers raw requests without a network listener.
#[derive(Debug)]
pub struct Offline {
    app: Arc<App>,
    runtime: tokio::runtime::Runtime,
}

impl Offline {
    /// Starts the engine and opens the key store exactly as [`crate::Server::start`]
    /// does (`config.listen` and `config.tls` are not used).
    pub fn start(config: Config, admin_key: Option<String>) -> Result<Offline, StartError> {
        let Prepared { app, .. } = prepare(config, admin_key)?;
        // Multi-threaded: key-store changes run in `block_in_place`.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("herald-api-offline")
            .enable_all()
            .build()
            .map_err(|e| StartError::Runtime(format!("cannot start the API thread: {e}")))?;
        Ok(Offline {
            app: Arc::new(app),
            runtime,
        })
    }

    /// Sends `request` (any bytes: one request, several pipelined ones, or garbage) on a
    /// fresh connection, closes the sending side, and returns every byte the handler
    /// answered before it closed the connection (at most 16 MiB).
    pub fn exchange(&self, request: &[u8]) -> Vec<u8> {
        self.runtime.block_on(async {
            let (client, server_side) = tokio::io::duplex(STREAM_BUFFER_BYTES);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            // The handler only stops early on a shutdown, which never comes here.
            let (_stop, stop_rx) = tokio::sync::watch::channel(false);
            let serve =
                server::serve_connection(server_side, PEER, Arc::clone(&self.app), stop_rx, None);
            let send = async {
                // The handler may close before it has read everything (an answer
                // with `Connection: close`); what it did not read is dropped.
                let _ = to_server.write_all(request).await;
                let _ = to_server.shutdown().await;
            };
            let receive = async {
                let mut answer = Vec::new();
                let mut chunk = vec![0u8; 16 * 1024];
                loop {
                    match from_server.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = ANSWER_BYTES_MAX.saturating_sub(answer.len());
                            answer.extend_from_slice(&chunk[..n.min(room)]);
                        }
                    }
                }
                answer
            };
            let ((), (), answer) = tokio::join!(serve, send, receive);
            answer
        })
    }

    /// Stops the engine (journals what it accepted; waits its grace period for
    /// deliveries in flight).
    pub fn shutdown(self) -> Result<(), String> {
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
        self.app.herald.shutdown().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN_KEY: &str = "hra_offline_test_admin_key_0123456789abcdef";

    fn offline(dir: &std::path::Path) -> Offline {
        let config = Config {
            data_dir: dir.to_path_buf(),
            shards: 1,
            ..Config::default()
        };
        Offline::start(config, Some(ADMIN_KEY.to_string())).expect("offline start")
    }

    fn status_line(answer: &[u8]) -> String {
        let text = String::from_utf8_lossy(answer);
        text.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn requests_in_bytes_answers_out() {
        let dir = tempfile::tempdir().unwrap();
        let api = offline(dir.path());
        let answer = api.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");

        // Authenticated, through the admin key: create a tenant, then list it.
        let body = br#"{"id":"acme"}"#;
        let mut create = format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        create.extend_from_slice(body);
        let answer = api.exchange(&create);
        assert_eq!(status_line(&answer), "HTTP/1.1 201 Created", "{answer:?}");

        // Two pipelined requests get two answers, in order.
        let list = format!(
            "GET /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n"
        );
        let answer = api.exchange(format!("{list}{list}").as_bytes());
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        assert!(text.contains("\"acme\""), "{text}");

        // Garbage gets a 400 and a close; an unfinished request gets nothing.
        assert_eq!(
            status_line(&api.exchange(b"\x00\x01garbage\r\n\r\n")),
            "HTTP/1.1 400 Bad Request"
        );
        assert!(api.exchange(b"GET /healthz HTTP/1.1\r\nHost:").is_empty());
        api.shutdown().unwrap();
    }
}
