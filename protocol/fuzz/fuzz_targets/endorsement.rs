#![no_main]
use libfuzzer_sys::fuzz_target;
use oda_protocol::Endorsement;

fuzz_target!(|data: &[u8]| {
    oda_protocol_fuzz::signed::<Endorsement>(data);
});
