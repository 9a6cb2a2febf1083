//! Benchmark: what warden adds to a tool call (design §7, performance budget).
//!
//! One process runs the test kit's streamable-HTTP MCP server (tool `echo`), an embedded warden
//! on a temporary SQLite database, and warden's control socket served in-process. Against that
//! one server it measures, with warm connections:
//!
//! - `bare`: rmcp's own client (`StreamableHttpClientTransport` + `().serve(..)`);
//! - `in-process`: `WardenHandle::call_tool` (one user, one session, one upstream connection);
//! - `socket`: `warden::client::Client` over the Unix control socket (`tools.call`).
//!
//! Each configuration runs N sequential calls (per-call latency) and, for a fixed duration, C
//! concurrent callers (throughput). The configurations are interleaved in rounds, in a rotated
//! order, after a warm-up; the report gives medians across rounds, and ratios computed within
//! each round (then the median of those ratios). CPU per call is the whole process's CPU time
//! (client + warden + server) over the phase, divided by its calls; the warden-minus-bare
//! difference is warden's own CPU per call.
//!
//! Run it with `cargo run --release --example bench -- --calls 2000 --rounds 5`.

// A benchmark program: a failed setup or a failed call should stop it with a message, so
// unwrap/expect are fine here; the casts are between counts and floats for statistics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt as _, Peer, RoleClient, RunningService, ServiceExt as _};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use warden::client::Client;
use warden::crypto::{Keyring, MasterKey};
use warden::{Config, MCPCredentialStore, ServerAuth, ServerConfig, Transport, Warden, WardenHandle};
use warden_testkit::{CredentialCheck, HttpServerConfig, Identities, spawn_http_server};

const USER: &str = "bench";
const SERVER: &str = "echo";
const TOKEN: &str = "bench-token";
const TEXT: &str = "hello from the benchmark";

#[derive(Parser, Debug, Clone)]
#[command(about = "warden's per-call overhead against bare rmcp")]
struct Args {
    /// Sequential calls per configuration per round.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Rounds (each runs every configuration once, in a rotated order).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent callers in the throughput phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of each throughput phase, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Sequential warm-up calls per configuration (plus one throughput phase of a quarter of
    /// the duration each).
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    /// Bare rmcp clients for the multi-client throughput baseline.
    #[arg(long, default_value_t = 4)]
    bare_clients: usize,
}

/// One way of making a call.
enum Target {
    Bare(Peer<RoleClient>),
    Handle(WardenHandle),
    Socket(Client),
}

fn arguments() -> JsonObject {
    let Value::Object(map) = json!({ "text": TEXT }) else { unreachable!() };
    map
}

impl Target {
    async fn call(&mut self, args: &JsonObject) -> anyhow::Result<()> {
        let text = match self {
            Target::Bare(peer) => {
                let mut params = CallToolRequestParams::new("echo");
                params.arguments = Some(args.clone());
                let result = peer.call_tool(params).await?;
                result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone())
            }
            Target::Handle(handle) => {
                let result = handle.call_tool(USER, SERVER, "echo", Some(args.clone()), None).await?;
                result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone())
            }
            Target::Socket(client) => {
                let params = json!({ "user": USER, "server": SERVER, "tool": "echo", "arguments": args });
                let result = client.call("tools.call", params).await?;
                result.pointer("/content/0/text").and_then(Value::as_str).map(str::to_owned)
            }
        };
        anyhow::ensure!(text.as_deref() == Some(TEXT), "unexpected echo: {text:?}");
        Ok(())
    }
}

/// CPU time of the whole process so far, in nanoseconds: the sum over its threads of
/// `/proc/self/task/*/schedstat` (nanosecond resolution; threads that exited are not counted,
/// and none exit during a phase). Falls back to `/proc/self/stat` (clock ticks).
fn process_cpu_ns() -> u64 {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
                any = true;
            }
        }
    }
    if any {
        return total;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based) → indexes 11, 12.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks * 10_000_000
}

/// One configuration's figures in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    seq_cpu_us: f64,
    calls_per_s: f64,
    conc_cpu_us: f64,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// `calls` sequential calls: (sorted latencies, CPU µs per call).
async fn sequential(target: &mut Target, calls: usize) -> anyhow::Result<(Vec<Duration>, f64)> {
    let args = arguments();
    let mut latencies = Vec::with_capacity(calls);
    let cpu0 = process_cpu_ns();
    for _ in 0..calls {
        let start = Instant::now();
        target.call(&args).await?;
        latencies.push(start.elapsed());
    }
    let cpu = process_cpu_ns().saturating_sub(cpu0);
    latencies.sort();
    Ok((latencies, cpu as f64 / 1e3 / calls as f64))
}

/// One caller per target, each calling in a loop until `duration` has passed: (targets back,
/// calls per second, CPU µs per call).
async fn concurrent(targets: Vec<Target>, duration: Duration) -> anyhow::Result<(Vec<Target>, f64, f64)> {
    let args = Arc::new(arguments());
    let cpu0 = process_cpu_ns();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|mut target| {
            let args = Arc::clone(&args);
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    target.call(&args).await?;
                    done += 1;
                }
                anyhow::Ok((target, done))
            })
        })
        .collect();
    let mut back = Vec::with_capacity(tasks.len());
    let mut total = 0u64;
    for task in tasks {
        let (target, done) = task.await??;
        back.push(target);
        total += done;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu_ns().saturating_sub(cpu0);
    Ok((back, total as f64 / elapsed, cpu as f64 / 1e3 / total as f64))
}

/// A bare rmcp client of the server, warm (initialized).
async fn bare_client(
    url: &str,
    lifecycle: Option<ClientLifecycleMode>,
) -> anyhow::Result<RunningService<RoleClient, ()>> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(TOKEN.to_owned());
    let transport = StreamableHttpClientTransport::from_config(config);
    Ok(match lifecycle {
        None => ().serve(transport).await?,
        Some(mode) => ().serve_with_lifecycle(transport, mode).await?,
    })
}

/// The names of the latency and throughput configurations, in table order.
const SEQ: [&str; 3] = ["bare rmcp", "warden in-process", "warden socket"];

struct Setup {
    bare: RunningService<RoleClient, ()>,
    bare_many: Vec<RunningService<RoleClient, ()>>,
    handle: WardenHandle,
    socket_conc: Vec<Client>,
}

impl Setup {
    /// Latency configuration `i` as a target (socket: the sequential client, moved in and out).
    fn seq_target(&mut self, i: usize, socket: &mut Option<Client>) -> Target {
        match i {
            0 => Target::Bare(self.bare.peer().clone()),
            1 => Target::Handle(self.handle.clone()),
            _ => Target::Socket(socket.take().expect("socket client")),
        }
    }

    /// Throughput configuration `i`: 0 one bare client, 1 several bare clients, 2 in-process,
    /// 3 one socket connection per caller.
    fn conc_targets(&mut self, i: usize, callers: usize) -> Vec<Target> {
        match i {
            0 => (0..callers).map(|_| Target::Bare(self.bare.peer().clone())).collect(),
            1 => (0..callers).map(|k| Target::Bare(self.bare_many[k % self.bare_many.len()].peer().clone())).collect(),
            2 => (0..callers).map(|_| Target::Handle(self.handle.clone())).collect(),
            _ => std::mem::take(&mut self.socket_conc).into_iter().map(Target::Socket).collect(),
        }
    }

    fn give_back(&mut self, targets: Vec<Target>) {
        for t in targets {
            if let Target::Socket(c) = t {
                self.socket_conc.push(c);
            }
        }
    }
}

const CONC: [&str; 4] = ["bare rmcp, 1 client", "bare rmcp, K clients", "warden in-process", "warden socket"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.calls > 0 && args.rounds > 0 && args.concurrency > 0 && args.bare_clients > 0);
    let duration = Duration::from_millis(args.duration_ms);

    // The MCP server.
    let identities = Identities::new().with(TOKEN, "bench@example.com");
    let server = spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(identities))).await?;
    let url = server.url();

    // warden, embedded, with its control socket served in-process.
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(&format!(
        "[database]\nurl = \"sqlite:{}\"\n[policy]\nallow_loopback = true\n[oauth]\ncallback_listen = \"127.0.0.1:0\"\n",
        dir.path().join("warden.db").display()
    ))?;
    let keyring = Arc::new(Keyring::new(&MasterKey::generate()?, &[]));
    let store = MCPCredentialStore::connect(&config.database.url, 4, Arc::clone(&keyring)).await?;
    let warden = Warden::start_with_store(config, store).await?;
    let handle = warden.handle();
    handle
        .put_server(
            USER,
            ServerConfig {
                name: SERVER.into(),
                transport: Transport::Http { url: url.clone() },
                auth: ServerAuth::Bearer { token: TOKEN.into() },
            },
        )
        .await?;
    let socket_path = dir.path().join("run/warden.sock");
    let socket = warden::control::ControlSocket::bind(&socket_path).await?;
    let control = handle.config().control.clone();
    let context = Arc::new(warden::control::Context {
        handle: handle.clone(),
        capabilities: warden::control::Capabilities::new(keyring.signing_key()),
        limits: warden::control::Limits::from_config(&control),
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(socket.serve(context, control.allowed_uids.clone(), control.max_connections, stop_rx));

    // Clients, all warm before any measurement.
    let bare = bare_client(&url, None).await?;
    let mut bare_many = Vec::new();
    for _ in 0..args.bare_clients {
        bare_many.push(bare_client(&url, None).await?);
    }
    let probe = bare_client(&url, Some(warden::mcp::lifecycle("auto"))).await?;
    let version = |s: &RunningService<RoleClient, ()>| {
        s.peer().peer_info().map_or_else(|| "?".to_owned(), |i| format!("{:?}", i.protocol_version))
    };
    let versions = format!(
        "protocol negotiated by bare `().serve()`: {}; by warden's lifecycle (auto): {}",
        version(&bare),
        version(&probe)
    );
    drop(probe.cancel().await);
    let mut socket_slot = Some(connect(&socket_path).await?);
    let mut socket_conc = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        socket_conc.push(connect(&socket_path).await?);
    }
    let mut setup = Setup { bare, bare_many, handle: handle.clone(), socket_conc };

    eprintln!("{versions}");
    eprintln!("warming up ...");
    for i in 0..SEQ.len() {
        let mut t = setup.seq_target(i, &mut socket_slot);
        sequential(&mut t, args.warmup).await.with_context(|| format!("warm-up of {}", SEQ[i]))?;
        if let Target::Socket(c) = t {
            socket_slot = Some(c);
        }
    }
    for i in 0..CONC.len() {
        let targets = setup.conc_targets(i, args.concurrency);
        let (back, _, _) =
            concurrent(targets, duration / 4).await.with_context(|| format!("warm-up of {}", CONC[i]))?;
        setup.give_back(back);
    }

    // Measurement rounds: every configuration once per round, in a rotated order.
    let mut seq: Vec<Vec<Sample>> = vec![Vec::new(); SEQ.len()];
    let mut conc: Vec<Vec<Sample>> = vec![Vec::new(); CONC.len()];
    let started = Instant::now();
    for round in 0..args.rounds {
        for k in 0..SEQ.len() {
            let i = (k + round) % SEQ.len();
            let mut t = setup.seq_target(i, &mut socket_slot);
            let (lat, cpu) = sequential(&mut t, args.calls).await.with_context(|| SEQ[i])?;
            if let Target::Socket(c) = t {
                socket_slot = Some(c);
            }
            seq[i].push(Sample {
                p50_us: percentile(&lat, 0.5),
                p90_us: percentile(&lat, 0.9),
                p99_us: percentile(&lat, 0.99),
                seq_cpu_us: cpu,
                ..Sample::default()
            });
        }
        for k in 0..CONC.len() {
            let i = (k + round) % CONC.len();
            let targets = setup.conc_targets(i, args.concurrency);
            let (back, rate, cpu) = concurrent(targets, duration).await.with_context(|| CONC[i])?;
            setup.give_back(back);
            conc[i].push(Sample { calls_per_s: rate, conc_cpu_us: cpu, ..Sample::default() });
        }
        eprintln!(
            "round {}/{}: p50 bare {:.0} µs, in-process {:.0} µs, socket {:.0} µs; calls/s bare {:.0}, bare×{} {:.0}, in-process {:.0}, socket {:.0}",
            round + 1,
            args.rounds,
            seq[0][round].p50_us,
            seq[1][round].p50_us,
            seq[2][round].p50_us,
            conc[0][round].calls_per_s,
            args.bare_clients,
            conc[1][round].calls_per_s,
            conc[2][round].calls_per_s,
            conc[3][round].calls_per_s,
        );
    }
    let measured = started.elapsed();

    println!("{}", report(&args, &seq, &conc, &versions, measured));

    let _ = stop.send(true);
    let _ = serving.await;
    drop(setup);
    warden.shutdown(Duration::from_secs(2)).await;
    server.shutdown().await;
    Ok(())
}

async fn connect(path: &Path) -> anyhow::Result<Client> {
    Client::connect(path).await.with_context(|| format!("connecting to {}", path.display()))
}

/// Median over rounds of one field.
fn med(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(f).collect())
}

/// Per-round ratio `a/b` of one field: (median, min, max).
fn ratio(a: &[Sample], b: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect();
    let min = r.iter().copied().fold(f64::INFINITY, f64::min);
    let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(r), min, max)
}

fn report(args: &Args, seq: &[Vec<Sample>], conc: &[Vec<Sample>], versions: &str, measured: Duration) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "\n### warden bench: {} sequential calls, {} callers for {} ms, {} rounds (medians across rounds; {:.0} s measured)\n",
        args.calls,
        args.concurrency,
        args.duration_ms,
        args.rounds,
        measured.as_secs_f64()
    );
    let _ = writeln!(w, "{versions}\n");
    let _ = writeln!(w, "Sequential (one caller, one connection), per call:\n");
    let _ = writeln!(w, "| configuration | p50 µs | p90 µs | p99 µs | process CPU µs/call |");
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for (name, s) in SEQ.iter().zip(seq) {
        let _ = writeln!(
            w,
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            med(s, |x| x.p50_us),
            med(s, |x| x.p90_us),
            med(s, |x| x.p99_us),
            med(s, |x| x.seq_cpu_us)
        );
    }
    let _ = writeln!(w, "\nThroughput, {} concurrent callers:\n", args.concurrency);
    let _ = writeln!(w, "| configuration | calls/s | process CPU µs/call |");
    let _ = writeln!(w, "|---|---:|---:|");
    for (name, s) in CONC.iter().zip(conc) {
        let name = name.replace('K', &args.bare_clients.to_string());
        let _ = writeln!(w, "| {name} | {:.0} | {:.0} |", med(s, |x| x.calls_per_s), med(s, |x| x.conc_cpu_us));
    }
    let _ = writeln!(w, "\nRatios (per round, then the median; range across rounds in brackets):\n");
    let _ = writeln!(w, "| ratio | median | range | budget |");
    let _ = writeln!(w, "|---|---:|---:|---:|");
    let mut row = |label: &str, (m, lo, hi): (f64, f64, f64), budget: &str| {
        let _ = writeln!(w, "| {label} | {m:.3}× | [{lo:.3}, {hi:.3}] | {budget} |");
    };
    row("in-process / bare, p50 latency", ratio(&seq[1], &seq[0], |x| x.p50_us), "≤ 1.05×");
    row("in-process / bare, p99 latency", ratio(&seq[1], &seq[0], |x| x.p99_us), "—");
    row("socket / bare, p50 latency", ratio(&seq[2], &seq[0], |x| x.p50_us), "≤ 1.15×");
    row("socket / bare, p99 latency", ratio(&seq[2], &seq[0], |x| x.p99_us), "—");
    let k = args.bare_clients;
    row("in-process / bare (1 client), throughput", ratio(&conc[2], &conc[0], |x| x.calls_per_s), "≥ 0.9×");
    row(&format!("in-process / bare ({k} clients), throughput"), ratio(&conc[2], &conc[1], |x| x.calls_per_s), "—");
    row("socket / bare (1 client), throughput", ratio(&conc[3], &conc[0], |x| x.calls_per_s), "≥ 0.9×");
    row(&format!("socket / bare ({k} clients), throughput"), ratio(&conc[3], &conc[1], |x| x.calls_per_s), "—");
    let _ =
        writeln!(w, "\nwarden's own CPU per call (process CPU/call minus bare's, medians of per-round differences):\n");
    let diff = |a: &[Sample], b: &[Sample], f: &dyn Fn(&Sample) -> f64| {
        median(a.iter().zip(b).map(|(x, y)| f(x) - f(y)).collect())
    };
    let _ = writeln!(
        w,
        "- sequential: in-process +{:.0} µs, socket +{:.0} µs",
        diff(&seq[1], &seq[0], &|x| x.seq_cpu_us),
        diff(&seq[2], &seq[0], &|x| x.seq_cpu_us)
    );
    let _ = writeln!(
        w,
        "- {} callers (vs 1 bare client): in-process +{:.0} µs, socket +{:.0} µs",
        args.concurrency,
        diff(&conc[2], &conc[0], &|x| x.conc_cpu_us),
        diff(&conc[3], &conc[0], &|x| x.conc_cpu_us)
    );
    out
}
