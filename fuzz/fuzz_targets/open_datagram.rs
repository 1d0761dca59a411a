//! Fuzzes the gossip datagram opener (`vip_daemon::core::seal`).
//!
//! Per input:
//! 1. `Opener::open` on the raw bytes must not panic and must reject them (accepting would
//!    mean the fuzzer forged a Poly1305 tag).
//! 2. The input as a plaintext: sealing must succeed exactly when it fits, the datagram must
//!    open to the same bytes once, be rejected as a replay the second time, and be rejected
//!    after one input-chosen bit flip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use vip_daemon::core::seal::{Opener, Rejected, Sealer, MAX_DATAGRAM, MAX_PLAINTEXT, OVERHEAD};

const KEY: [u8; 32] = [0x5a; 32];
const OTHER: [u8; 32] = [0xa5; 32];

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes, against an opener holding two keys (as during a rotation).
    let mut opener = Opener::new(&[KEY, OTHER]);
    assert!(
        opener.open(data).is_err(),
        "accepted {} arbitrary bytes",
        data.len()
    );
    assert_eq!(
        opener.senders(),
        0,
        "a rejected datagram created a replay window"
    );
    assert_eq!(opener.counts().rejected(), 1);

    // 2. Round trip of the input as plaintext, with a fixed-seed rng for reproducibility.
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut sealer = Sealer::new(KEY, Some(OTHER), 7);
    let sealed = match sealer.seal(data, &mut rng) {
        Ok(sealed) => sealed,
        Err(_) => {
            assert!(data.len() > MAX_PLAINTEXT, "refused {} bytes", data.len());
            return;
        }
    };
    assert_eq!(sealed.len(), data.len() + OVERHEAD);
    assert!(sealed.len() <= MAX_DATAGRAM);
    let mut opener = sealer.opener();
    assert_eq!(opener.open(&sealed).as_deref(), Ok(data));
    assert_eq!(opener.open(&sealed), Err(Rejected::Replayed));

    let mut flipped = sealed.clone();
    let at = data.first().map_or(0, |b| usize::from(*b) * 7 + data.len()) % flipped.len();
    flipped[at] ^= 1 << (data.len() % 8);
    assert!(
        Opener::new(&[KEY, OTHER]).open(&flipped).is_err(),
        "bit {at} flip accepted"
    );
});
