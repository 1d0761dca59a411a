//! Fuzzes the gossip item codec (`vip_daemon::core::wire`).
//!
//! Per input:
//! 1. `decode` on the raw bytes must not panic. An item it reads must encode to a prefix of
//!    the input (the encoding is canonical; trailing bytes are a newer node's fields) and
//!    decode again to itself.
//! 2. Unknown kinds and newer versions are answered as such, never as an item or an error.
//! 3. Every proper prefix of an item's encoding is an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vip_daemon::core::wire::{decode, encode, header, Decoded, VERSION};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(Decoded::Item(item)) => {
            let bytes = encode(&item).expect("a decoded item encodes");
            assert!(data.starts_with(&bytes), "not canonical: {item:?}");
            assert_eq!(decode(&bytes), Ok(Decoded::Item(item)));
            for n in 0..bytes.len() {
                assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes read");
            }
        }
        Ok(Decoded::Unknown { kind }) => {
            assert_eq!(data[0], VERSION);
            assert_eq!(header(data).map(|h| h.0), Ok(kind));
        }
        Ok(Decoded::Newer { version }) => {
            assert!(version > VERSION);
            assert_eq!(data[0], version);
        }
        Err(_) => {}
    }
});
