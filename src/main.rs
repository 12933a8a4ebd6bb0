//! The `pgscale` command line: serve, check, demo, shard-of.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgscale::config::{Config, LoadError};

#[derive(Parser)]
#[command(
    name = "pgscale",
    version,
    about = "A Postgres scaling proxy: pooling, read/write splitting, sharding"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, default_value = "config/shards.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print every problem (exit 2 when invalid).
    Check {
        #[arg(long, default_value = "config/shards.toml")]
        config: PathBuf,
    },
    /// Print the shard owning a key: `NAME (index I, postgres://HOST:PORT) hash=0x…` (exit 2 for a
    /// bad key or table).
    ShardOf {
        #[arg(long, default_value = "config/shards.toml")]
        config: PathBuf,
        /// The sharded table the key belongs to, for its key type (default: `sharding.key_type`).
        #[arg(long)]
        table: Option<String>,
        /// The key as text, e.g. `42` or a uuid.
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
    /// Start a local Postgres and the proxy in front of it; Ctrl-C stops both.
    Demo {
        /// Port for the proxy.
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Start this many shard primaries with a sample schema (users, pitches) sharded across them.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        shards: Option<u32>,
        /// Streaming replicas of each primary; reads are routed to them.
        #[arg(long, default_value_t = 0)]
        replicas: usize,
        /// Port for the Prometheus endpoint (0: any free port; METRICS_URL says which).
        #[arg(long, default_value_t = 0)]
        metrics_port: u16,
        /// Require TLS from clients, with a generated CA and certificate (URLs say sslmode=require).
        #[arg(long)]
        tls: bool,
    },
    /// Add shards online: plan, copy, catchup, verify, cleanup, status (see README).
    Reshard {
        #[command(subcommand)]
        command: pgscale::sharding::reshard::ReshardCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::ShardOf { config, table, key } => {
            return shard_of(&config, table.as_deref(), &key)
        }
        Command::Reshard { command } => return reshard(&command),
        Command::Serve { config: path } => match Config::load(&path) {
            Ok(loaded) => {
                runtime(loaded.listen.workers).and_then(|rt| rt.block_on(serve(loaded, path)))
            }
            Err(e) => Err(e.into()),
        },
        Command::Demo {
            port,
            shards,
            replicas,
            metrics_port,
            tls,
        } => {
            let options = pgscale::demo::DemoOptions {
                port,
                shards: shards.map(|n| n as usize),
                replicas,
                metrics_port,
                tls,
            };
            runtime(0).and_then(|rt| rt.block_on(demo(options)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgscale: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `workers = 1` runs everything on one thread (PgBouncer's model: no cross-thread wake-ups);
/// 0 means one worker per core.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `pgscale check`: exit 2 with every problem when the config is invalid.
fn check(path: &std::path::Path) -> ExitCode {
    match load_or_report(path) {
        Ok(config) => {
            let replicas: usize = config.shards.iter().map(|s| s.replicas.len()).sum();
            println!(
                "{}: OK ({} user(s), {} shard(s), {} replica(s), {:?} pooling on {}, read/write split {})",
                path.display(),
                config.users.len(),
                config.shards.len(),
                replicas,
                config.pool.mode,
                config.listen.address,
                if config.routing.read_write_split && replicas > 0 { "on" } else { "off" }
            );
            println!(
                "sharding: {} sharded table(s), {} reference table(s) over {} shard(s) ({}); unsharded tables on {}",
                config.sharding.tables.len(),
                config.sharding.reference_tables.len(),
                config.shards.len(),
                config.shard_names().join(", "),
                config.shard_names().get(config.default_shard_index()).map_or("?", String::as_str),
            );
            println!(
                "operations: admin console for {} user(s) (+{} SHOW-only), metrics {}",
                config.admin.users.len(),
                config.admin.stats_users.len(),
                config
                    .metrics
                    .address
                    .as_deref()
                    .map_or("off".to_string(), |a| format!("at http://{a}/metrics")),
            );
            println!(
                "client TLS: {}",
                match (&config.listen.tls_cert, config.listen.tls_mode) {
                    (Some(cert), mode) if mode != pgscale::tls::TlsMode::Disable =>
                        format!("{} (certificate {cert})", mode.as_str()),
                    (_, mode) => mode.as_str().to_string(),
                }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `pgscale shard-of`: the owner of one key, or exit 2.
fn shard_of(path: &std::path::Path, table: Option<&str>, key: &str) -> ExitCode {
    let config = match load_or_report(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match pgscale::shard_of::shard_of(&config, table, key) {
        Ok(found) => {
            println!("{found}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgscale: {e}");
            ExitCode::from(2)
        }
    }
}

/// `pgscale reshard ...`: exit 1 on an error, 3 when `verify` finds differences.
fn reshard(command: &pgscale::sharding::reshard::ReshardCommand) -> ExitCode {
    use pgscale::sharding::reshard::{run, Outcome};
    let outcome = runtime(0).and_then(|rt| {
        let mut out = std::io::stdout();
        Ok(rt.block_on(run(command, &mut out))?)
    });
    match outcome {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Differences) => ExitCode::from(3),
        Err(e) => {
            eprintln!("pgscale reshard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a config, printing every problem and giving exit status 2 when it cannot.
fn load_or_report(path: &std::path::Path) -> Result<Config, ExitCode> {
    match Config::load(path) {
        Ok(config) => Ok(config),
        Err(LoadError::Invalid { path, source }) => {
            eprintln!("{path}: {} problem(s):", source.problems.len());
            for problem in &source.problems {
                eprintln!("  {problem}");
            }
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(2))
        }
    }
}

async fn serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let proxy = pgscale::listener::start_from_file(config, path).await?;
    let waited = run_until_stopped(&proxy).await;
    proxy.shutdown().await;
    waited
}

async fn demo(options: pgscale::demo::DemoOptions) -> anyhow::Result<()> {
    let demo = pgscale::demo::start(options).await?;
    for line in &demo.lines {
        println!("{line}");
    }
    println!("pgscale demo is running; Ctrl-C stops it and every server it started.");
    let waited = run_until_stopped(&demo.proxy).await;
    demo.stop().await;
    waited
}

/// Reloads the config on each SIGHUP (a rejected one is logged and the old one keeps running);
/// returns on SIGINT or SIGTERM.
async fn run_until_stopped(proxy: &pgscale::listener::RunningProxy) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                // The outcome is logged by the reload itself.
                let _ = proxy.reload().await;
            }
        }
    }
}
