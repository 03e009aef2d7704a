//! The `oda-node` binary.
fn main() {}
