//! `oda-node`: the ODA mesh daemon library.
