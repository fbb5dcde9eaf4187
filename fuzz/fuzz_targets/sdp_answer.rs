#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| signalling::fuzzing::sdp_answer(data));
