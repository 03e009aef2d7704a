//! `oda-node`: the ODA mesh daemon library.
//!
//! - [`api`]: the local HTTP API (loopback, bearer token) for the `oda` command line.
//! - [`config`]: the configuration file and data-dir layout.
//! - [`executor`]: runs one job (the `command` executor: argv, process group, outputs).
//! - [`identity`]: the node key (libp2p peer id and fact-signing key in one).
//! - [`misses`]: why a cache missed: the nearest cached expressions.
//! - [`network`]: the libp2p swarm, its event loop and the client handle.
//! - [`provenance`]: the DAG of signed facts behind a result, and its PROV-O export.
//! - [`registry`]: workflow folders, bundles, and workflows added by the owner.
//! - [`store`]: sled trees and blob files.
//! - [`runtime`]: assembles and runs a node.
//! - [`scheduler`]: jobs: requester, worker, trust policy.

pub mod api;
mod blocking;
pub mod config;
pub mod executor;
pub mod identity;
pub mod job_runner;
pub mod misses;
pub mod network;
pub mod provenance;
pub mod recent;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod store;
#[cfg(test)]
mod test_facts;
pub mod trust_files;
