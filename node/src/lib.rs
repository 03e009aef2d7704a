//! `oda-node`: the ODA mesh daemon library.
//!
//! - [`config`]: the configuration file and data-dir layout.
//! - [`identity`]: the node key (libp2p peer id and fact-signing key in one).
//! - [`network`]: the libp2p swarm, its event loop and the client handle.
//! - [`store`]: sled trees and blob files.
//! - [`runtime`]: assembles and runs a node.

pub mod config;
pub mod identity;
pub mod network;
pub mod runtime;
pub mod store;
