#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| signalling::fuzzing::whip_offer(data));
