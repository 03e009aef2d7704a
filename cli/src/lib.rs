//! oda-cli: the `oda` command line (binary in `main.rs`).
//!
//! - [`client`]: finds the node (data dir, `api.addr`, `api.token`) and talks
//!   to its local API; maps failures to exit codes.
//! - [`commands`]: one function per command, human or `--json` output.
//! - [`prov`]: `oda prov`, the provenance of a result.
//! - [`render`]: tables, sizes, durations.
//! - [`why`]: `oda why`, the cached expressions nearest to a miss.
//! - [`demo`]: `oda demo`, a self-contained mesh on this machine.

pub mod client;
pub mod commands;
pub mod demo;
pub mod prov;
pub mod render;
pub mod sweep;
pub mod why;
