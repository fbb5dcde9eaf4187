#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::fuzzing::dtls::dtls_record(data));
