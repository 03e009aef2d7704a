#![no_main]
use libfuzzer_sys::fuzz_target;
use oda_protocol::JobToken;

fuzz_target!(|data: &[u8]| {
    oda_protocol_fuzz::signed::<JobToken>(data);
});
