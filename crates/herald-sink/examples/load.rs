//! Drives a sink running in another process (e.g. `herald sink`): optionally opens and
//! holds idle keep-alive connections, then sends keep-alive requests with [`run_load`],
//! and reports CPU time per request (from `/proc/PID/stat`) of the sink process, of this
//! client and of both (on loopback each side's `send` runs the other side's TCP input
//! and wake-up, so only the sum compares receivers fairly), and the sink's resident
//! memory.
//!
//! ```text
//! cargo run --release -p herald-sink --example load -- \
//!     --addr 127.0.0.1:9000 [--requests 200000] [--connections 8] [--payload 256] \
//!     [--idle 10000] [--sink-pid PID] [--ca PEM_PATH]
//! ```
//!
//! With `--idle N`, N connections each send one request first (so the sink has served
//! them), stay open during the load, and are checked afterwards with one more request
//! each: the report says how many were still answered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use herald_http::{encode_request, Limits, ResponseParser};
use herald_sink::{run_load, LoadConfig};

type Error = Box<dyn std::error::Error>;

/// Every socket wait of the idle connections is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_S: u64 = 100;

struct Args {
    addr: SocketAddr,
    requests: u64,
    connections: usize,
    payload: usize,
    idle: usize,
    sink_pid: Option<u32>,
    ca: Option<String>,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        addr: "127.0.0.1:9000".parse()?,
        requests: 200_000,
        connections: 8,
        payload: 256,
        idle: 0,
        sink_pid: None,
        ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse()?,
            "--requests" => args.requests = value()?.parse()?,
            "--connections" => args.connections = value()?.parse()?,
            "--payload" => args.payload = value()?.parse()?,
            "--idle" => args.idle = value()?.parse()?,
            "--sink-pid" => args.sink_pid = Some(value()?.parse()?),
            "--ca" => args.ca = Some(std::fs::read_to_string(value()?)?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// utime + stime of a process (`"self"` for this one), in ticks.
fn cpu_ticks(pid: &str) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the rest follows its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are 12 and 13 after "pid (comm)".
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

fn status_field(pid: &str, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|v| v.trim_start_matches(':').trim().to_owned())
}

/// One request on a plain keep-alive connection; true when it was answered 2xx.
fn one_request(stream: &mut TcpStream, host: &str) -> bool {
    let mut out = Vec::new();
    if encode_request(&mut out, "POST", "/idle", host, &[], b"{}").is_err() {
        return false;
    }
    if stream.write_all(&out).is_err() {
        return false;
    }
    let mut parser = ResponseParser::new(Limits::default());
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        match parser.feed(&buf[..n]) {
            Ok((_, Some(response))) => return (200..300).contains(&response.status),
            Ok((_, None)) => {}
            Err(_) => return false,
        }
    }
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let sink_pid = args.sink_pid.map(|pid| pid.to_string());
    let host = args.addr.to_string();
    let mut idle = Vec::with_capacity(args.idle);
    let opened = Instant::now();
    for _ in 0..args.idle {
        let mut stream = TcpStream::connect(args.addr)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        if !one_request(&mut stream, &host) {
            return Err(format!("idle connection {} was not answered", idle.len()).into());
        }
        idle.push(stream);
    }
    if args.idle > 0 {
        println!(
            "idle: {} connections open and answered once in {:.1} s",
            idle.len(),
            opened.elapsed().as_secs_f64()
        );
    }
    if let Some(pid) = &sink_pid {
        println!(
            "sink: VmRSS {} Threads {}",
            status_field(pid, "VmRSS").unwrap_or_default(),
            status_field(pid, "Threads").unwrap_or_default()
        );
    }

    let before = sink_pid.as_deref().map(cpu_ticks).transpose()?;
    let client_before = cpu_ticks("self")?;
    let report = run_load(
        args.addr,
        &LoadConfig {
            connections: args.connections,
            requests: args.requests,
            target: "/load".into(),
            payload_bytes: args.payload,
            latency_field: None,
            headers: Vec::new(),
            tls_ca_pem: args.ca.clone(),
        },
    )?;
    let after = sink_pid.as_deref().map(cpu_ticks).transpose()?;
    let client_cpu_us = (cpu_ticks("self")? - client_before) * 1_000_000 / TICKS_PER_S;
    println!(
        "load: {} requests on {} connections, {} not 2xx, {:.0}/s",
        report.requests, args.connections, report.non_success, report.per_s
    );
    let per_request = |cpu_us: u64| cpu_us as f64 / report.requests.max(1) as f64;
    let of_a_core = |cpu_us: u64| cpu_us as f64 / 1e4 / report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "client cpu: {:.2} us/request ({:.0} % of one core)",
        per_request(client_cpu_us),
        of_a_core(client_cpu_us)
    );
    if let (Some(before), Some(after)) = (before, after) {
        let cpu_us = (after - before) * 1_000_000 / TICKS_PER_S;
        println!(
            "sink cpu: {:.2} s for {} requests = {:.2} us/request ({:.0} % of one core)",
            cpu_us as f64 / 1e6,
            report.requests,
            per_request(cpu_us),
            of_a_core(cpu_us)
        );
        println!(
            "total cpu: {:.2} us/request",
            per_request(cpu_us + client_cpu_us)
        );
    }
    if args.idle > 0 {
        let mut still = 0;
        for stream in &mut idle {
            if one_request(stream, &host) {
                still += 1;
            }
        }
        println!(
            "idle: {still} of {} still answered after the load",
            idle.len()
        );
    }
    Ok(())
}
