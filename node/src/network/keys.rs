//! DHT key formats. Records: `fact/<ExprId hex>` → encoded `SignedFact`.
//! Provider records: `expr/<ExprId hex>` (holders of facts for an expression) and
//! `blob/<BlobId hex>` (holders of bytes) and `verdicts/<FactId hex>`
//! (controllers that endorsed or disputed a fact, answering `GetVerdicts`).

use libp2p::kad::RecordKey;
use oda_protocol::{BlobId, ExprId};

/// Record key of the fact record of an expression.
pub fn fact_record(expr: &ExprId) -> RecordKey {
    RecordKey::new(&format!("fact/{expr}"))
}

/// Provider key of an expression (peers holding its facts).
pub fn expr_providers(expr: &ExprId) -> RecordKey {
    RecordKey::new(&format!("expr/{expr}"))
}

/// Provider key of a blob (peers holding its bytes).
pub fn blob_providers(blob: &BlobId) -> RecordKey {
    RecordKey::new(&format!("blob/{blob}"))
}

/// Provider key of a fact's verdicts (controllers that endorsed or
/// disputed it).
pub fn verdict_providers(fact: &oda_protocol::FactId) -> RecordKey {
    RecordKey::new(&format!("verdicts/{fact}"))
}

/// The expression a fact record key names, if it is one.
pub fn parse_fact_record(key: &RecordKey) -> Option<ExprId> {
    let text = std::str::from_utf8(key.as_ref()).ok()?;
    text.strip_prefix("fact/")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_keys_round_trip_and_reject_others() {
        let e = ExprId([9; 32]);
        assert_eq!(parse_fact_record(&fact_record(&e)), Some(e));
        assert_eq!(parse_fact_record(&expr_providers(&e)), None);
        assert_eq!(parse_fact_record(&RecordKey::new(&[0xff, 0xfe])), None);
        assert_eq!(parse_fact_record(&RecordKey::new(&"fact/xyz")), None);
    }
}
