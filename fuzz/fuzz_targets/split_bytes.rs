//! Arbitrary bytes through signature checks and splitting: nothing may panic, a body signed
//! with the secret always verifies, and split's invariants hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wapipe_core::signature::{sign_meta, verify_meta, verify_wasender};

#[path = "invariants.rs"]
mod invariants;

fuzz_target!(|input: (&[u8], &[u8], &[u8])| {
    let (secret, header, body) = input;
    let _ = verify_meta(secret, body, Some(header));
    let _ = verify_wasender(secret, Some(header));
    let signed = sign_meta(secret, body);
    assert_eq!(verify_meta(secret, body, Some(signed.as_bytes())), Ok(()));
    invariants::check(body);
});
