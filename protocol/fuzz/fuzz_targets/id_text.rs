#![no_main]
use libfuzzer_sys::fuzz_target;
use oda_protocol::{BlobId, ExprId, FactId, NetworkId, PublicKey, Topic, WorkflowId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<ExprId>() {
        assert_eq!(format!("{id:#}").parse::<ExprId>(), Ok(id));
    }
    let _ = text.parse::<WorkflowId>();
    let _ = text.parse::<BlobId>();
    let _ = text.parse::<FactId>();
    let _ = text.parse::<PublicKey>();
    let _ = text.parse::<NetworkId>();
    let _ = Topic::decode(&NetworkId::main(), text);
});
