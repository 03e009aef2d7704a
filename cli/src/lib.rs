//! oda-cli.
