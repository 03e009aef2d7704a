#![no_main]
use libfuzzer_sys::fuzz_target;
use oda_protocol::Dispute;

fuzz_target!(|data: &[u8]| {
    oda_protocol_fuzz::signed::<Dispute>(data);
});
