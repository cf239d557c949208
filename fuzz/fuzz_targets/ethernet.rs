#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate::fuzzing::ethernet(data));
