#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate::fuzzing::tenants_file(data));
