#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate::fuzzing::pcap_file(data));
