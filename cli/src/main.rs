//! `oda`: the ODA mesh command line. It talks to a running `oda-node` through
//! the node's local API (address and token from the node's data dir).
//!
//! Exit codes: 0 ok; 1 the job failed (analysis exception, exhausted attempts,
//! cancelled) or the node could not do what was asked; 2 usage error (bad
//! arguments, unknown ids, wrong token); 3 no node is reachable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oda_cli::client::{discover, Api, CliError};
use oda_cli::commands;
use oda_cli::prov::{self, ProvFormat};
use oda_cli::why;

/// ODA mesh: submit analyses, wait for and fetch results, manage workflows
/// and the cache of a running `oda-node`.
#[derive(Parser)]
#[command(
    name = "oda",
    version,
    about,
    long_about = None,
    after_help = "Example: oda submit events -a obs_id=1 --wait\n\nExit codes: 0 ok, 1 the job failed, 2 usage error, 3 node unreachable.\nStart a node with `oda-node init && oda-node run`."
)]
struct Cli {
    /// The node's data dir (for api.addr and api.token). Default: the
    /// platform's data dir, or $ODA_DATA_DIR.
    #[arg(long, global = true, env = "ODA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The API address (host:port or URL), instead of the data dir's api.addr.
    #[arg(long, global = true, env = "ODA_API", value_name = "ADDR")]
    api: Option<String>,
    /// Print JSON (shapes documented in docs/cli.md) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit an expression: a workflow and its arguments.
    ///
    /// Arguments are typed by the node using the workflow's manifest: an int
    /// input takes `-a obs_id=3`, a blob input `-a events=bl:<hex>` or the output
    /// of another expression `-a events=ex:<hex>/events`, a list input
    /// comma-separated items or `-a NAME=...` repeated.
    #[command(
        after_help = "Example: oda submit events -a obs_id=1 -a rate=5 --wait --fetch -o out/"
    )]
    Submit {
        /// Workflow name or id (wf:<hex>).
        workflow: String,
        /// An argument, NAME=VALUE (repeatable).
        #[arg(short = 'a', long = "arg", value_name = "NAME=VALUE", value_parser = commands::parse_arg)]
        args: Vec<(String, String)>,
        /// Wait for the result, showing progress.
        #[arg(long)]
        wait: bool,
        /// Wait, then download the outputs into -o DIR as <output name> files.
        #[arg(long)]
        fetch: bool,
        /// Directory for --fetch (default: the current directory).
        #[arg(short = 'o', long = "out", value_name = "DIR", requires = "fetch")]
        out: Option<PathBuf>,
        /// Skip the caches and compute the expression again (also when workers
        /// recorded that it failed on them).
        #[arg(long)]
        no_cache: bool,
        /// Take the result only when K distinct trusted workers agree on it
        /// (same output bytes), running it on more workers as needed; 1 to 16
        /// (default: the node's [trust] quorum).
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=16))]
        quorum: Option<u32>,
        /// Sweep an argument (repeatable): NAME=A..B (integers, both ends
        /// included) or NAME=X,Y,Z; one job per combination of the sweeps
        /// (at most 10,000), followed with one progress line with --wait.
        #[arg(long, value_name = "NAME=SPEC", value_parser = oda_cli::sweep::parse, conflicts_with_all = ["fetch", "out"])]
        sweep: Vec<(String, Vec<String>)>,
    },
    /// Show a job: state, result, who computed it, outputs.
    #[command(after_help = "Example: oda status 3f1c9a0e5b7d4c2a8e6f1b3d5c7a9e0f")]
    Status {
        /// Job id.
        job: String,
    },
    /// Wait until a job ends; exit 1 if it failed (or, with --timeout, still runs).
    #[command(
        after_help = "Example: oda wait 3f1c9a0e5b7d4c2a8e6f1b3d5c7a9e0f --timeout 600 && echo done"
    )]
    Wait {
        /// Job id.
        job: String,
        /// Give up after this many seconds (exit 1, the job keeps running).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Print a job's log lines (from the worker running it).
    #[command(after_help = "Example: oda logs -f 3f1c9a0e5b7d4c2a8e6f1b3d5c7a9e0f")]
    Logs {
        /// Job id.
        job: String,
        /// Keep printing new lines until the job ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a job.
    #[command(after_help = "Example: oda cancel 3f1c9a0e5b7d4c2a8e6f1b3d5c7a9e0f")]
    Cancel {
        /// Job id.
        job: String,
    },
    /// List the jobs submitted to this node, oldest first.
    #[command(after_help = "Example: oda jobs --state failed --workflow lightcurve --limit 20")]
    Jobs {
        /// Only jobs in this state (queued, advertised, running, done, failed, cancelled, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this workflow (name).
        #[arg(long)]
        workflow: Option<String>,
        /// Only the most recent N.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only jobs submitted within this long (e.g. 30m, 2h, 1day).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Print only the job ids, one per line.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Download an expression's outputs, or one blob, verifying its BLAKE3.
    ///
    /// For an expression, every output is written to -o DIR (default: the current
    /// directory) as <output name>. For a blob, -o PATH is the file (or a
    /// directory; `-` writes to standard output).
    #[command(
        after_help = "Example: oda get ex:9d2f...e1 -o results/\n         oda get bl:5a7c...03 -o events.json"
    )]
    Get {
        /// Expression id (ex:<hex>) or blob id (bl:<hex>).
        id: String,
        /// Output directory (expression) or file (blob).
        #[arg(short = 'o', long = "out", value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Add, list, show and endorse workflows.
    #[command(
        subcommand,
        after_help = "Example: oda workflow add examples/workflows/events"
    )]
    Workflow(WorkflowCommand),
    /// List the connected peers.
    #[command(after_help = "Example: oda peers")]
    Peers,
    /// The blob cache: list, pin, unpin, gc, stats.
    #[command(subcommand, after_help = "Example: oda cache stats")]
    Cache(CacheCommand),
    /// The node at a glance: version, peer id, addresses, peers, uptime, store.
    #[command(after_help = "Example: oda node")]
    Node,
    /// The node's key.
    #[command(subcommand, after_help = "Example: oda key show")]
    Key(KeyCommand),
    /// Whose results this node trusts: list the policy, import group rosters.
    #[command(subcommand, after_help = "Example: oda trust ls")]
    Trust(TrustCommand),
    /// Groups owned by this node's key: sign a roster for the members.
    #[command(
        subcommand,
        after_help = "Example: oda group sign integral-team --version 1 --member 3f2a...c9 -o team.roster"
    )]
    Group(GroupCommand),
    /// Show the facts (signed results) of an expression.
    #[command(after_help = "Example: oda facts ex:9d2f...e1 --mesh")]
    Facts {
        /// Expression id.
        expr: String,
        /// Also ask the mesh, not only this node.
        #[arg(long)]
        mesh: bool,
    },
    /// Show how a result was made: the DAG of signed facts behind it, or
    /// W3C PROV-O (Turtle, JSON-LD).
    #[command(after_help = "Example: oda prov ex:9d2f...e1 --format turtle > result.ttl")]
    Prov {
        /// Expression id.
        expr: String,
        /// `text` (default), or W3C PROV-O as `turtle` or `jsonld`.
        #[arg(long, value_enum, default_value = "text")]
        format: ProvFormat,
        /// Ask the mesh for facts this node does not hold.
        #[arg(long)]
        mesh: bool,
        /// Only this fact of the expression (fa:<hex>) as the root.
        #[arg(long)]
        fact: Option<String>,
    },
    /// Why an expression is not cached here: the nearest cached expressions
    /// of the same workflow and the arguments that differ.
    #[command(
        after_help = "Example: oda why lightcurve -a events=ex:9d2f...e1/events -a bin_s=0.25"
    )]
    Why {
        /// An expression id (ex:<hex>), or a workflow name or id.
        target: String,
        /// With a workflow: an argument, NAME=VALUE (repeatable).
        #[arg(short = 'a', long = "arg", value_name = "NAME=VALUE", value_parser = commands::parse_arg)]
        args: Vec<(String, String)>,
    },
    /// Acknowledge a result's contributors: a text for a paper naming the
    /// workflows and workers of every step behind it, and a BibTeX entry.
    #[command(after_help = "Example: oda credits --ack ex:9d2f...e1")]
    Credits {
        /// The result (expression id) to acknowledge.
        #[arg(long, value_name = "EXPR", required = true)]
        ack: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example: oda completions bash > ~/.local/share/bash-completion/completions/oda"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (oda.1 and one per command, oda-submit.1, …) into DIR.
    #[command(after_help = "Example: oda man ~/.local/share/man/man1 && man oda-submit")]
    Man {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
    /// Run a self-contained demo mesh on this machine (needs python3).
    #[command(after_help = "Example: oda demo --keep")]
    Demo {
        /// Keep the demo's temporary directory and print its path.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum WorkflowCommand {
    /// Add a workflow folder (with oda-workflow.toml) on the node's machine.
    #[command(after_help = "Example: oda workflow add examples/workflows/lightcurve")]
    Add {
        /// The folder.
        dir: PathBuf,
    },
    /// List the node's workflows.
    #[command(after_help = "Example: oda workflow ls")]
    Ls,
    /// Show a workflow: inputs, outputs, files, endorsements.
    #[command(after_help = "Example: oda workflow show lightcurve")]
    Show {
        /// Workflow name or id.
        id: String,
    },
    /// Endorse a workflow with the node's key (vouch that it is fit to run).
    #[command(after_help = "Example: oda workflow endorse lightcurve --note \"reviewed v1.0.0\"")]
    Endorse {
        /// Workflow name or id.
        id: String,
        /// A note stored with the endorsement.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List the cached blobs.
    #[command(after_help = "Example: oda cache ls")]
    Ls,
    /// Pin a blob: never evict it.
    #[command(after_help = "Example: oda cache pin bl:5a7c...03")]
    Pin {
        /// Blob id.
        blob: String,
    },
    /// Unpin a blob: it may be evicted again.
    #[command(after_help = "Example: oda cache unpin bl:5a7c...03")]
    Unpin {
        /// Blob id.
        blob: String,
    },
    /// Evict least recently used unpinned blobs down to the cap.
    #[command(after_help = "Example: oda cache gc")]
    Gc,
    /// Counts and sizes.
    #[command(after_help = "Example: oda cache stats --json")]
    Stats,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the node's public key and peer id.
    #[command(after_help = "Example: oda key show")]
    Show,
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Show the trust policy: own key, trusted keys, experts, groups and
    /// their rosters.
    #[command(after_help = "Example: oda trust ls")]
    Ls,
    /// Trust a key's facts from now on (kept across restarts).
    #[command(after_help = "Example: oda trust add 3f2a...c9")]
    Add {
        /// The public key (hex).
        key: String,
    },
    /// Stop trusting a key added with `oda trust add`.
    #[command(after_help = "Example: oda trust rm 3f2a...c9")]
    Rm {
        /// The public key (hex).
        key: String,
    },
    /// What this node knows of a key: trusted or not and why, the groups
    /// that list it, the facts by it that it stores.
    #[command(after_help = "Example: oda trust show 3f2a...c9")]
    Show {
        /// The public key (hex).
        key: String,
    },
    /// Import a signed group roster (a file written by `oda group sign`);
    /// kept if it is newer than the version this node holds.
    #[command(after_help = "Example: oda trust import team.roster")]
    Import {
        /// The roster file (hex).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Sign a roster of a group owned by this node's key.
    #[command(
        after_help = "Example: oda group sign integral-team --version 2 --member 3f2a...c9 --member 77b0...1e -o team.roster"
    )]
    Sign {
        /// The group's name.
        name: String,
        /// The roster's version: higher than any signed before (the newest wins).
        #[arg(long)]
        version: u64,
        /// A member's public key (hex); repeat for each member.
        #[arg(long = "member", value_name = "KEY")]
        members: Vec<String>,
        /// Write the roster here instead of printing it.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { keep } => return oda_cli::demo::run(keep),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "oda", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            let command = <Cli as clap::CommandFactory>::command();
            return match std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(command, &dir))
            {
                Ok(()) => {
                    println!("man pages written to {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot write man pages into {}: {e}", dir.display());
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let as_json = cli.json;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(hint) = &e.hint {
                eprintln!("hint: {hint}");
            }
            if as_json {
                println!(
                    "{}",
                    serde_json::json!({ "error": e.message, "hint": e.hint, "exit_code": e.code })
                );
            }
            ExitCode::from(e.code)
        }
    }
}

fn run(cli: Cli) -> Result<u8, CliError> {
    let api = Api::new(discover(cli.data_dir, cli.api)?);
    let j = cli.json;
    match cli.command {
        Command::Submit {
            workflow,
            args,
            wait,
            no_cache,
            quorum,
            sweep,
            ..
        } if !sweep.is_empty() => {
            let jobs = oda_cli::sweep::combinations(&args, &sweep).map_err(CliError::usage)?;
            oda_cli::sweep::run(&api, &workflow, &jobs, (wait, no_cache, quorum), j)
        }
        Command::Submit {
            workflow,
            args,
            wait,
            fetch,
            out,
            no_cache,
            quorum,
            ..
        } => commands::submit(
            &api,
            &workflow,
            &args,
            (wait, fetch, out.as_deref()),
            (no_cache, quorum),
            j,
        ),
        Command::Status { job } => commands::status(&api, &job, j),
        Command::Wait { job, timeout } => commands::wait(&api, &job, timeout, j),
        Command::Logs { job, follow } => commands::logs(&api, &job, follow, j),
        Command::Cancel { job } => commands::cancel(&api, &job, j),
        Command::Jobs {
            state,
            workflow,
            limit,
            since,
            quiet,
        } => commands::jobs(
            &api,
            &commands::JobFilter {
                state,
                workflow,
                limit,
                since_ms: since.map(|d| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    u64::try_from(now.saturating_sub(d).as_millis()).unwrap_or(u64::MAX)
                }),
            },
            quiet,
            j,
        ),
        Command::Get { id, out } => commands::get(&api, &id, out.as_deref(), j),
        Command::Workflow(w) => match w {
            WorkflowCommand::Add { dir } => commands::workflow_add(&api, &dir, j),
            WorkflowCommand::Ls => commands::workflow_ls(&api, j),
            WorkflowCommand::Show { id } => commands::workflow_show(&api, &id, j),
            WorkflowCommand::Endorse { id, note } => {
                commands::workflow_endorse(&api, &id, note.as_deref(), j)
            }
        },
        Command::Peers => commands::peers(&api, j),
        Command::Node => commands::node(&api, j),
        Command::Cache(c) => match c {
            CacheCommand::Ls => commands::cache_ls(&api, j),
            CacheCommand::Pin { blob } => commands::cache_pin(&api, &blob, true, j),
            CacheCommand::Unpin { blob } => commands::cache_pin(&api, &blob, false, j),
            CacheCommand::Gc => commands::cache_gc(&api, j),
            CacheCommand::Stats => commands::cache_stats(&api, j),
        },
        Command::Key(KeyCommand::Show) => commands::key_show(&api, j),
        Command::Trust(TrustCommand::Ls) => commands::trust_ls(&api, j),
        Command::Trust(TrustCommand::Add { key }) => commands::trust_key(&api, &key, true, j),
        Command::Trust(TrustCommand::Rm { key }) => commands::trust_key(&api, &key, false, j),
        Command::Trust(TrustCommand::Show { key }) => commands::trust_show(&api, &key, j),
        Command::Trust(TrustCommand::Import { file }) => commands::trust_import(&api, &file, j),
        Command::Group(GroupCommand::Sign {
            name,
            version,
            members,
            out,
        }) => commands::group_sign(&api, (&name, version, &members), out.as_deref(), j),
        Command::Facts { expr, mesh } => commands::facts(&api, &expr, mesh, j),
        Command::Prov {
            expr,
            format,
            mesh,
            fact,
        } => prov::prov(&api, &expr, (format, mesh, fact.as_deref()), j),
        Command::Why { target, args } => why::why(&api, &target, &args, j),
        Command::Credits { ack } => prov::ack(&api, &ack, j),
        // Handled in `main` before the node is looked for.
        Command::Demo { .. } | Command::Completions { .. } | Command::Man { .. } => Ok(0),
    }
}
