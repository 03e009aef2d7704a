//! `oda-node`: the ODA mesh daemon library.
//!
//! - [`store`]: sled trees and blob files.

pub mod store;
