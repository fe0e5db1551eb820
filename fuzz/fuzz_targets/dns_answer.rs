#![no_main]
//! Bytes a pod controls, fed to the check of the same name in `chokepoint::fuzz`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chokepoint::fuzz::dns_answer(data));
