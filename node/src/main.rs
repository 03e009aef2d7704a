//! The `oda-node` binary: `init` creates a data dir (key, API token, config),
//! `run` starts the daemon and its local API until SIGINT or SIGTERM,
//! `execute` runs one job as a `job` runner and exits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use oda_node::config::{self, files, Config};
use oda_node::identity::NodeKey;
use oda_node::runtime::Node;
use oda_node::scheduler::worker::Serves;

use tokio_util::sync::CancellationToken;

/// ODA mesh node: joins the mesh, serves cached results, computes jobs.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Data directory (key, config, store). Default: the platform's data dir,
    /// or $ODA_DATA_DIR.
    #[arg(long, global = true, env = config::DATA_DIR_ENV)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data dir: a new node key and API token (mode 0600) and a
    /// commented config.toml.
    ///
    /// Example: oda-node init --data-dir ./node1
    Init {
        /// Replace an existing key (the node gets a new identity).
        #[arg(long)]
        force: bool,
        /// Network id to write into the config.
        #[arg(long)]
        network: Option<String>,
    },
    /// Run the daemon until SIGINT or SIGTERM.
    ///
    /// Example: oda-node run --peer /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    Run {
        /// Run as the platform's bootstrap node (relay server, DHT server, high limits).
        #[arg(long)]
        bootstrap: bool,
        #[command(flatten)]
        start: StartArgs,
    },
    /// Run one job and exit (a `job` runner, e.g. a SLURM array task or a CI
    /// step): join the mesh, take the advert of EXPR from whoever asks (its
    /// workflow must be added to this data dir or endorsed by a trusted
    /// expert), run it, deliver and publish the result, then stay until its
    /// outputs were fetched (at most --linger). No local API.
    ///
    /// Exit codes: 0 the job succeeded; 1 it failed, ended in an analysis
    /// error, or nobody asked for it within --timeout; 2 usage.
    ///
    /// Example: oda-node execute --expr ex:3f2a... --peer /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    Execute {
        /// The expression to run.
        #[arg(long, value_name = "EXPR_ID")]
        expr: oda_protocol::ExprId,
        /// How long to wait for a requester to advertise and assign it.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// How long to stay after the run for its outputs to be fetched.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        linger: std::time::Duration,
        #[command(flatten)]
        start: StartArgs,
    },
}

/// Where a node's settings come from, for `run` and `execute`.
#[derive(clap::Args)]
struct StartArgs {
    /// Config file (default: config.toml in the data dir).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (repeatable); replaces the config's `listen`.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Peer to join through (repeatable), added to the config's `peers`.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<String>,
    /// Network id; replaces the config's `network`.
    #[arg(long)]
    network: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ODA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, `outer: inner: …`, each cause once: many of
/// the node's errors already end with their cause's text, which `{:#}`
/// would print again.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = match cli.data_dir {
        Some(d) => d,
        None => config::default_data_dir()?,
    };
    // Absolute, so paths handed to job processes (which run in their own
    // working directories) and written to files stay valid.
    let data_dir = std::path::absolute(&data_dir)
        .with_context(|| format!("cannot resolve the data dir {}", data_dir.display()))?;
    match cli.command {
        Command::Init { force, network } => init(&data_dir, force, network),
        Command::Run { bootstrap, start } => {
            let mut cfg = load_config(&data_dir, start)?;
            cfg.bootstrap |= bootstrap;
            let validated = cfg.validate()?;
            let api = cfg.api_listen()?;
            let key = NodeKey::load(&data_dir.join(files::KEY))?;
            let token = oda_node::api::auth::ensure_token(&data_dir).with_context(|| {
                format!(
                    "cannot read or create the API token {}",
                    data_dir.join(files::API_TOKEN).display()
                )
            })?;
            runtime()?.block_on(serve(data_dir, key, validated, api, token))
        }
        Command::Execute {
            expr,
            timeout,
            linger,
            start,
        } => {
            let cfg = load_config(&data_dir, start)?;
            let mut validated = cfg.validate()?;
            let worker = validated
                .worker
                .get_or_insert_with(|| config::WorkerSettings {
                    slots: 1,
                    serves: Serves::public(),
                    workflows: Vec::new(),
                    sandbox: Default::default(),
                    sandbox_paths: Vec::new(),
                });
            worker.slots = 1;
            worker.serves = Serves::job(expr);
            let key = NodeKey::load(&data_dir.join(files::KEY))?;
            runtime()?.block_on(oda_node::job_runner::one_job(
                &data_dir,
                key,
                validated,
                expr,
                (timeout, linger),
            ))
        }
    }
}

/// The config of the data dir (or `start.config`), with the command
/// line's replacements.
fn load_config(data_dir: &Path, start: StartArgs) -> anyhow::Result<Config> {
    let path = start.config.unwrap_or_else(|| data_dir.join(files::CONFIG));
    let mut cfg = Config::load(&path).map_err(|e| {
        // Only a missing file means the data dir was never set up.
        let missing = matches!(&e, config::ConfigError::Read { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(e);
        if missing {
            e.context(format!(
                "no config: run `oda-node init --data-dir {}` first",
                data_dir.display()
            ))
        } else {
            e
        }
    })?;
    if !start.listen.is_empty() {
        cfg.listen = start.listen;
    }
    cfg.peers.extend(start.peers);
    if let Some(n) = start.network {
        cfg.network = n;
    }
    Ok(cfg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init(data_dir: &std::path::Path, force: bool, network: Option<String>) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let key = NodeKey::generate();
    key.save(&data_dir.join(files::KEY), force)?;
    let token_path = data_dir.join(files::API_TOKEN);
    if force {
        oda_node::api::auth::write_new_token(data_dir)
    } else {
        oda_node::api::auth::ensure_token(data_dir)
    }
    .with_context(|| format!("cannot write {}", token_path.display()))?;
    let config_path = data_dir.join(files::CONFIG);
    if !config_path.exists() || force {
        let mut text = config::DEFAULT_CONFIG_TOML.to_string();
        if let Some(net) = network {
            net.parse::<oda_protocol::NetworkId>()?;
            text = text.replace("network = \"main\"", &format!("network = \"{net}\""));
        }
        std::fs::write(&config_path, text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }
    println!("data dir:   {}", data_dir.display());
    println!("peer id:    {}", key.peer_id());
    println!("public key: {}", key.public());
    println!("api token:  {}", token_path.display());
    println!("config:     {}", config_path.display());
    Ok(())
}

async fn serve(
    data_dir: PathBuf,
    key: NodeKey,
    cfg: config::Validated,
    api_addr: std::net::SocketAddr,
    token: String,
) -> anyhow::Result<()> {
    // Bind the API first: a busy port fails before the node joins the mesh.
    let listener = tokio::net::TcpListener::bind(api_addr).await.with_context(|| {
        format!("cannot listen for the local API on {api_addr}; set [api] listen in config.toml to another port (port 0 picks a free one)")
    })?;
    let api_addr = listener.local_addr().context("local API address")?;
    let session_end = cfg
        .worker
        .as_ref()
        .and_then(|w| w.serves.session)
        .map(|s| s.until_ms);
    if let Some(until) = session_end.filter(|until| *until <= now_ms()) {
        anyhow::bail!(
            "the session of this \"session\" worker ended at {} ([worker] session_until); set a later end",
            rfc3339(until)
        );
    }
    let node = Arc::new(Node::start(&data_dir, key, &cfg).await?);
    println!("peer id: {}", node.peer_id());
    for addr in node.wait_listening(std::time::Duration::from_secs(5)).await {
        println!("listening on {addr}");
    }
    let api_shutdown = CancellationToken::new();
    let mut api = tokio::spawn(oda_node::api::serve(
        node.clone(),
        listener,
        token,
        api_shutdown.clone(),
    ));
    write_api_addr(&data_dir, api_addr)?;
    println!(
        "local API on http://{api_addr} (token in {})",
        data_dir.join(files::API_TOKEN).display()
    );
    let result = tokio::select! {
        r = oda_node::runtime::stop_signal() => r.context("cannot listen for stop signals"),
        () = session_ended(session_end) => Ok(()),
        r = &mut api => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the local API stopped")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the local API failed")),
            Err(e) => Err(anyhow::Error::new(e).context("the local API task failed")),
        },
    };
    tracing::info!("shutting down");
    api_shutdown.cancel();
    let _ = std::fs::remove_file(data_dir.join(files::API_ADDR));
    if !api.is_finished()
        && tokio::time::timeout(std::time::Duration::from_secs(5), &mut api)
            .await
            .is_err()
    {
        tracing::warn!("the local API did not stop within 5 s");
        api.abort();
    }
    node.shutdown().await.context("flushing the store")?;
    result
}

/// Write `api.addr` (atomically) so the `oda` command line finds the API.
fn write_api_addr(data_dir: &Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let path = data_dir.join(files::API_ADDR);
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Returns when a "session" worker's session ends (never for other nodes).
async fn session_ended(until_ms: Option<u64>) {
    let Some(until) = until_ms else {
        return std::future::pending().await;
    };
    tokio::time::sleep(std::time::Duration::from_millis(
        until.saturating_sub(now_ms()),
    ))
    .await;
    println!("the session ended at {}: stopping", rfc3339(until));
}

fn now_ms() -> u64 {
    oda_node::scheduler::jobs::now_ms()
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_cause_already_in_the_message_is_not_printed_again() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read config /x: {source}")]
        struct Read {
            source: std::io::Error,
        }
        let io = std::io::Error::from(std::io::ErrorKind::IsADirectory);
        let e = anyhow::Error::new(Read { source: io }).context("starting");
        let text = describe(&e);
        assert_eq!(text.matches("is a directory").count(), 1, "{text}");
        assert!(
            text.starts_with("starting: cannot read config /x: "),
            "{text}"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(describe(&plain), "outer: inner");
    }
}
