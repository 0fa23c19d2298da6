//! Arbitrary operation sequences against the sans-IO protocol connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snakemq_fuzz::connection::{ConnectionInput, run};

fuzz_target!(|input: ConnectionInput| run(input));
