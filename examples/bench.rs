//! Benchmark: what warden adds to a tool call (design §7, performance budget).
//!
//! One process runs the test kit's streamable-HTTP MCP server (tool `echo`), an embedded warden
//! on a temporary SQLite database, and warden's control socket served in-process. Against that
//! one server it measures, with warm connections:
//!
//! - `bare`: rmcp's own client, `StreamableHttpClientTransport` started with the same lifecycle
//!   as warden (so both speak the same protocol version), in two flavours: `from_config`
//!   (rmcp's default reqwest client, which disables keep-alive: a TCP connect per call) and
//!   `with_client(reqwest::Client::new(), ..)` (keep-alive, like warden's own HTTP client; the
//!   baseline the budget is checked against);
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
    /// The MCP lifecycle, for warden (`[sessions] lifecycle`) and for the bare clients alike,
    /// so both speak the same protocol version: `auto` (warden's default; against this server
    /// it negotiates 2026-07-28), `initialize` (what rmcp's plain `().serve()` does,
    /// 2025-11-25), or `discover`. With `initialize` every keep-alive call stalls ~44 ms (see
    /// BENCHMARKS.md): use a small `--calls` (e.g. 100) then.
    #[arg(long, default_value = "auto", value_parser = ["auto", "initialize", "discover"])]
    lifecycle: String,
    /// Instead of the rounds, run only this configuration's throughput phase for the duration
    /// and exit (to profile one path, e.g. under `perf record`).
    #[arg(long, value_parser = ["bare", "in-process", "socket"])]
    profile: Option<String>,
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

/// Which reqwest client a bare rmcp transport gets.
#[derive(Debug, Clone, Copy)]
enum Http {
    /// `StreamableHttpClientTransport::from_config`: rmcp's default client, which sets
    /// `pool_max_idle_per_host(0)`, so every POST opens a new TCP connection.
    RmcpDefault,
    /// `StreamableHttpClientTransport::with_client(reqwest::Client::new(), ..)`: keep-alive
    /// connections, as warden's own per-server reqwest client has.
    Pooled,
}

/// A bare rmcp client of the server, warm (initialized).
async fn bare_client(
    url: &str,
    http: Http,
    lifecycle: Option<ClientLifecycleMode>,
) -> anyhow::Result<RunningService<RoleClient, ()>> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(TOKEN.to_owned());
    let transport = match http {
        Http::RmcpDefault => StreamableHttpClientTransport::from_config(config),
        Http::Pooled => StreamableHttpClientTransport::with_client(reqwest::Client::new(), config),
    };
    Ok(match lifecycle {
        None => ().serve(transport).await?,
        Some(mode) => ().serve_with_lifecycle(transport, mode).await?,
    })
}

/// One configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cfg {
    /// One bare client, rmcp's default HTTP client (`from_config`).
    BareDefault,
    /// One bare client with a keep-alive reqwest client.
    BarePooled,
    /// Several bare clients with keep-alive reqwest clients, callers spread over them.
    BarePooledMany,
    /// `WardenHandle::call_tool`.
    InProcess,
    /// `warden::client::Client` over the control socket (one connection per caller).
    Socket,
}

/// The latency configurations, in table order.
const SEQ: [Cfg; 4] = [Cfg::BareDefault, Cfg::BarePooled, Cfg::InProcess, Cfg::Socket];
/// The throughput configurations, in table order.
const CONC: [Cfg; 5] = [Cfg::BareDefault, Cfg::BarePooled, Cfg::BarePooledMany, Cfg::InProcess, Cfg::Socket];

impl Cfg {
    fn name(self, bare_clients: usize) -> String {
        match self {
            Cfg::BareDefault => "bare rmcp, `from_config` (no keep-alive), 1 client".into(),
            Cfg::BarePooled => "bare rmcp, keep-alive reqwest, 1 client".into(),
            Cfg::BarePooledMany => format!("bare rmcp, keep-alive reqwest, {bare_clients} clients"),
            Cfg::InProcess => "warden in-process (`WardenHandle::call_tool`)".into(),
            Cfg::Socket => "warden Unix socket (`tools.call`)".into(),
        }
    }
}

struct Setup {
    bare_default: RunningService<RoleClient, ()>,
    bare_pooled: RunningService<RoleClient, ()>,
    bare_pooled_many: Vec<RunningService<RoleClient, ()>>,
    handle: WardenHandle,
    socket_seq: Option<Client>,
    socket_conc: Vec<Client>,
}

impl Setup {
    /// Connects and initializes every client before any measurement.
    async fn connect(
        args: &Args,
        url: &str,
        socket_path: &Path,
        handle: &WardenHandle,
    ) -> anyhow::Result<(Self, String)> {
        // Clients, all connected and initialized before any measurement. The bare clients start
        // with the lifecycle warden uses (`warden::mcp::lifecycle` is the very mapping warden's
        // connections use), so both speak the same protocol version.
        let mode = || Some(warden::mcp::lifecycle(&args.lifecycle));
        let bare_default = bare_client(url, Http::RmcpDefault, mode()).await?;
        let bare_pooled = bare_client(url, Http::Pooled, mode()).await?;
        let mut bare_pooled_many = Vec::new();
        for _ in 0..args.bare_clients {
            bare_pooled_many.push(bare_client(url, Http::Pooled, mode()).await?);
        }
        let probe = bare_client(url, Http::RmcpDefault, None).await?;
        let version = |s: &RunningService<RoleClient, ()>| {
            s.peer().peer_info().map_or_else(|| "?".to_owned(), |i| format!("{:?}", i.protocol_version))
        };
        let versions = format!(
            "lifecycle `{}` (warden and bare clients) negotiates {}; plain `().serve()` would negotiate {}",
            args.lifecycle,
            version(&bare_pooled),
            version(&probe)
        );
        drop(probe.cancel().await);
        let socket_seq = Some(connect(socket_path).await?);
        let mut socket_conc = Vec::with_capacity(args.concurrency);
        for _ in 0..args.concurrency {
            socket_conc.push(connect(socket_path).await?);
        }
        let setup =
            Setup { bare_default, bare_pooled, bare_pooled_many, handle: handle.clone(), socket_seq, socket_conc };
        Ok((setup, versions))
    }

    /// `callers` targets of a configuration. Socket clients are moved out (one connection for
    /// the sequential phase, one per caller for the throughput phase) and come back through
    /// [`Self::give_back`].
    fn targets(&mut self, cfg: Cfg, callers: usize, sequential: bool) -> Vec<Target> {
        match cfg {
            Cfg::BareDefault => (0..callers).map(|_| Target::Bare(self.bare_default.peer().clone())).collect(),
            Cfg::BarePooled => (0..callers).map(|_| Target::Bare(self.bare_pooled.peer().clone())).collect(),
            Cfg::BarePooledMany => {
                let n = self.bare_pooled_many.len();
                (0..callers).map(|k| Target::Bare(self.bare_pooled_many[k % n].peer().clone())).collect()
            }
            Cfg::InProcess => (0..callers).map(|_| Target::Handle(self.handle.clone())).collect(),
            Cfg::Socket if sequential => vec![Target::Socket(self.socket_seq.take().expect("the sequential client"))],
            Cfg::Socket => std::mem::take(&mut self.socket_conc).into_iter().map(Target::Socket).collect(),
        }
    }

    fn give_back(&mut self, targets: Vec<Target>, sequential: bool) {
        for t in targets {
            if let Target::Socket(c) = t {
                if sequential {
                    self.socket_seq = Some(c);
                } else {
                    self.socket_conc.push(c);
                }
            }
        }
    }

    async fn run_sequential(&mut self, cfg: Cfg, calls: usize) -> anyhow::Result<Sample> {
        let mut targets = self.targets(cfg, 1, true);
        let result = sequential(&mut targets[0], calls).await;
        self.give_back(targets, true);
        let (lat, cpu) = result?;
        Ok(Sample {
            p50_us: percentile(&lat, 0.5),
            p90_us: percentile(&lat, 0.9),
            p99_us: percentile(&lat, 0.99),
            seq_cpu_us: cpu,
            ..Sample::default()
        })
    }

    async fn run_concurrent(&mut self, cfg: Cfg, callers: usize, duration: Duration) -> anyhow::Result<Sample> {
        let targets = self.targets(cfg, callers, false);
        let (back, rate, cpu) = concurrent(targets, duration).await?;
        self.give_back(back, false);
        Ok(Sample { calls_per_s: rate, conc_cpu_us: cpu, ..Sample::default() })
    }
}

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
        "[database]\nurl = \"sqlite:{}\"\n[policy]\nallow_loopback = true\n\
         [oauth]\ncallback_listen = \"127.0.0.1:0\"\n[sessions]\nlifecycle = \"{}\"\n",
        dir.path().join("warden.db").display(),
        args.lifecycle
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

    let (mut setup, versions) = Setup::connect(&args, &url, &socket_path, &handle).await?;

    eprintln!("{versions}");
    let only = args.profile.as_deref().map(|only| match only {
        "bare" => Cfg::BarePooled,
        "in-process" => Cfg::InProcess,
        _ => Cfg::Socket,
    });
    let warm = |cfg: &Cfg| only.is_none_or(|o| o == *cfg);
    eprintln!("warming up ...");
    for cfg in SEQ.into_iter().filter(warm) {
        setup.run_sequential(cfg, args.warmup).await.with_context(|| format!("warm-up of {cfg:?}"))?;
    }
    for cfg in CONC.into_iter().filter(warm) {
        setup
            .run_concurrent(cfg, args.concurrency, duration / 4)
            .await
            .with_context(|| format!("warm-up of {cfg:?}"))?;
    }

    if let Some(cfg) = only {
        eprintln!("profiling {} for {} ms (pid {})", cfg.name(args.bare_clients), args.duration_ms, std::process::id());
        let x = setup.run_concurrent(cfg, args.concurrency, duration).await?;
        println!(
            "{}: {:.0} calls/s, {:.0} µs process CPU per call",
            cfg.name(args.bare_clients),
            x.calls_per_s,
            x.conc_cpu_us
        );
        return Ok(());
    }

    // Measurement rounds: every configuration once per round, in an order rotated each round.
    let mut seq: Vec<Vec<Sample>> = vec![Vec::new(); SEQ.len()];
    let mut conc: Vec<Vec<Sample>> = vec![Vec::new(); CONC.len()];
    let started = Instant::now();
    for round in 0..args.rounds {
        for k in 0..SEQ.len() {
            let i = (k + round) % SEQ.len();
            seq[i].push(setup.run_sequential(SEQ[i], args.calls).await.with_context(|| format!("{:?}", SEQ[i]))?);
        }
        for k in 0..CONC.len() {
            let i = (k + round) % CONC.len();
            let sample = setup.run_concurrent(CONC[i], args.concurrency, duration).await;
            conc[i].push(sample.with_context(|| format!("{:?}", CONC[i]))?);
        }
        let p50: Vec<String> = seq.iter().map(|s| format!("{:.0}", s[round].p50_us)).collect();
        let rate: Vec<String> = conc.iter().map(|s| format!("{:.0}", s[round].calls_per_s)).collect();
        eprintln!("round {}/{}: p50 µs {} | calls/s {}", round + 1, args.rounds, p50.join(" "), rate.join(" "));
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

/// Median of the per-round differences `a - b` of one field.
fn diff(a: &[Sample], b: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| f(x) - f(y)).collect())
}

fn report(args: &Args, seq: &[Vec<Sample>], conc: &[Vec<Sample>], versions: &str, measured: Duration) -> String {
    let s = |cfg: Cfg| &seq[SEQ.iter().position(|c| *c == cfg).expect("a latency configuration")][..];
    let c = |cfg: Cfg| &conc[CONC.iter().position(|c| *c == cfg).expect("a throughput configuration")][..];
    let k = args.bare_clients;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "\n### warden bench: {} sequential calls, {} callers × {} ms, {} rounds ({:.0} s measured; medians across rounds)\n",
        args.calls,
        args.concurrency,
        args.duration_ms,
        args.rounds,
        measured.as_secs_f64()
    );
    let _ = writeln!(w, "{versions}\n");
    let _ = writeln!(w, "Sequential (one caller), per call:\n");
    let _ = writeln!(w, "| configuration | p50 µs | p90 µs | p99 µs | process CPU µs/call |");
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for (cfg, x) in SEQ.iter().zip(seq) {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            cfg.name(k),
            med(x, |x| x.p50_us),
            med(x, |x| x.p90_us),
            med(x, |x| x.p99_us),
            med(x, |x| x.seq_cpu_us)
        );
    }
    let _ = writeln!(w, "\nThroughput, {} concurrent callers:\n", args.concurrency);
    let _ = writeln!(w, "| configuration | calls/s | process CPU µs/call |");
    let _ = writeln!(w, "|---|---:|---:|");
    for (cfg, x) in CONC.iter().zip(conc) {
        let _ =
            writeln!(w, "| {} | {:.0} | {:.0} |", cfg.name(k), med(x, |x| x.calls_per_s), med(x, |x| x.conc_cpu_us));
    }
    let _ = writeln!(w, "\nRatios (computed per round, then the median; range across rounds in brackets):\n");
    let _ = writeln!(w, "| ratio | median | range | budget |");
    let _ = writeln!(w, "|---|---:|---:|---:|");
    let mut row = |label: &str, (m, lo, hi): (f64, f64, f64), budget: &str| {
        let _ = writeln!(w, "| {label} | {m:.3}× | [{lo:.3}, {hi:.3}] | {budget} |");
    };
    let (bp, bd, inp, sock) = (Cfg::BarePooled, Cfg::BareDefault, Cfg::InProcess, Cfg::Socket);
    row("p50 latency: in-process / bare (keep-alive)", ratio(s(inp), s(bp), |x| x.p50_us), "≤ 1.05×");
    row("p50 latency: socket / bare (keep-alive)", ratio(s(sock), s(bp), |x| x.p50_us), "≤ 1.15×");
    row("p99 latency: in-process / bare (keep-alive)", ratio(s(inp), s(bp), |x| x.p99_us), "—");
    row("p99 latency: socket / bare (keep-alive)", ratio(s(sock), s(bp), |x| x.p99_us), "—");
    row("p50 latency: in-process / bare (`from_config`)", ratio(s(inp), s(bd), |x| x.p50_us), "(reference)");
    row("p50 latency: socket / bare (`from_config`)", ratio(s(sock), s(bd), |x| x.p50_us), "(reference)");
    let tp = |x: &Sample| x.calls_per_s;
    row("throughput: in-process / bare (keep-alive, 1 client)", ratio(c(inp), c(bp), tp), "≥ 0.9×");
    row("throughput: socket / bare (keep-alive, 1 client)", ratio(c(sock), c(bp), tp), "≥ 0.9×");
    row(
        &format!("throughput: in-process / bare (keep-alive, {k} clients)"),
        ratio(c(inp), c(Cfg::BarePooledMany), tp),
        "(reference)",
    );
    row(
        &format!("throughput: socket / bare (keep-alive, {k} clients)"),
        ratio(c(sock), c(Cfg::BarePooledMany), tp),
        "(reference)",
    );
    row("throughput: in-process / bare (`from_config`, 1 client)", ratio(c(inp), c(bd), tp), "(reference)");
    row("throughput: socket / bare (`from_config`, 1 client)", ratio(c(sock), c(bd), tp), "(reference)");
    let _ = writeln!(
        w,
        "\nwarden's own CPU per call = process CPU/call minus bare (keep-alive, 1 client)'s, median of per-round differences:\n"
    );
    let _ = writeln!(
        w,
        "- sequential: in-process {:+.0} µs, socket {:+.0} µs",
        diff(s(inp), s(bp), |x| x.seq_cpu_us),
        diff(s(sock), s(bp), |x| x.seq_cpu_us)
    );
    let _ = writeln!(
        w,
        "- {} callers: in-process {:+.0} µs, socket {:+.0} µs",
        args.concurrency,
        diff(c(inp), c(bp), |x| x.conc_cpu_us),
        diff(c(sock), c(bp), |x| x.conc_cpu_us)
    );
    out
}
