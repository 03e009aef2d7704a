//! oda-tests.
