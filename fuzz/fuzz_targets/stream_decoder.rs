//! Arbitrary bytes in arbitrary chunks through the packet decoder and the frame decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| snakemq_fuzz::stream::run(data));
