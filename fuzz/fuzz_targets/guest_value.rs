#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate::fuzzing::guest_value(data));
