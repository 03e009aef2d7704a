#![no_main]
use libfuzzer_sys::fuzz_target;
use oda_protocol::messages::Gossip;

fuzz_target!(|data: &[u8]| {
    oda_protocol_fuzz::round_trip::<Gossip>(data);
});
