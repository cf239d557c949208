#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| estate::fuzzing::peer_frame_sealed(data));
