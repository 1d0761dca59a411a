//! Sealing of gossip datagrams: authenticated encryption under a shared cluster key, with
//! replay protection.
//!
//! Pure: no IO and no clock. The caller passes the random number generator (for nonces) and
//! the sender id (random per process start), so tests are deterministic.
//!
//! # Wire format
//!
//! ```text
//! offset  len  field
//!      0    2  magic "VF"
//!      2    1  version, 1
//!      3    1  key id: fingerprint of the key that sealed it (see below)
//!      4    8  sender id, big-endian: random per process start of the sender
//!     12    8  counter, big-endian: 0, 1, 2, ... per sender id
//!     20   24  nonce: random (XChaCha20's 192-bit nonce makes random nonces safe)
//!     44    n  ciphertext of the n-byte plaintext
//!   44+n   16  Poly1305 tag
//! ```
//!
//! The cipher is XChaCha20-Poly1305 (RustCrypto's audited `chacha20poly1305` crate). All
//! 44 header bytes are the associated data, so every header field is authenticated: a
//! changed sender id, counter or key id fails the tag just as a changed ciphertext does.
//! A sealed datagram is 60 bytes larger than its plaintext and at most [`MAX_DATAGRAM`]
//! bytes long, so a plaintext may be at most [`MAX_PLAINTEXT`] bytes.
//!
//! # Key id
//!
//! The key id lets a receiver that holds two keys (during a rotation) pick the right one
//! without trial decryption, and lets it tell "sealed with a key I do not hold"
//! ([`Rejected::UnknownKey`]) from "forged or corrupted" ([`Rejected::Forged`]). Every node
//! must derive the same id from the same key bytes, without a separate number to keep in
//! sync, so the id is a keyed fingerprint: the first byte of the Poly1305 tag of sealing an
//! empty plaintext under the key with the all-zero nonce and the associated data
//! `"vip-fabric key id"` (see [`key_id`]). It reveals one byte of a pseudo-random function
//! of the key, nothing usable about the key itself. Real datagrams use random nonces, so
//! the zero nonce is never used for data (a random 24-byte nonce is all zeros with
//! probability 2^-192). Two different keys share an id with probability 1/256; that is
//! harmless because [`Opener::open`] tries every key with a matching id.
//!
//! # Replay protection
//!
//! Each sender numbers its datagrams with a counter; receivers keep a 64-entry sliding
//! window per sender id ([`ReplayWindow`], as in IPsec and WireGuard), so a datagram is
//! accepted at most once, and reordering by up to 63 positions is tolerated. A restarted
//! sender picks a new random sender id, so its counter restarts at 0 without being taken
//! for a replay. The window is updated only after the tag verified: a forged datagram can
//! neither advance a window nor create one. [`Opener`] keeps at most [`MAX_SENDERS`]
//! windows and evicts the least recently seen sender when a new one arrives. An evicted
//! sender's old datagrams could be replayed once more, which is why the bound is well above
//! any expected cluster size; SWIM's incarnation numbers make stale gossip harmless anyway.

use std::collections::HashMap;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;
/// Largest sealed datagram, in bytes: fits a 1500-byte MTU with room for IP/UDP headers.
pub const MAX_DATAGRAM: usize = 1400;
/// The magic bytes that start every sealed datagram.
pub const MAGIC: [u8; 2] = *b"VF";
/// The wire format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Length of the nonce field.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag that ends every datagram.
pub const TAG_LEN: usize = 16;
/// Length of the header (magic, version, key id, sender id, counter, nonce): the AAD.
pub const HEADER_LEN: usize = 2 + 1 + 1 + 8 + 8 + NONCE_LEN;
/// Bytes a sealed datagram has beyond its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest plaintext that [`Sealer::seal`] accepts.
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - OVERHEAD;
/// Most senders whose replay windows an [`Opener`] keeps.
pub const MAX_SENDERS: usize = 64;
/// Width of a [`ReplayWindow`], in counters.
pub const WINDOW: u64 = 64;

const KEY_ID_AAD: &[u8] = b"vip-fabric key id";

/// The key id (fingerprint) of `key`, as put in the header of datagrams it seals: the first
/// byte of the tag of sealing nothing with the zero nonce and AAD `"vip-fabric key id"`.
/// Safe to log.
pub fn key_id(key: &[u8; KEY_LEN]) -> u8 {
    Key::new(key).id
}

/// One cluster key, ready to use. Its bytes are held only inside the cipher; `Debug` shows
/// the id only.
#[derive(Clone)]
struct Key {
    id: u8,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        let cipher = XChaCha20Poly1305::new(bytes.into());
        let mut empty: [u8; 0] = [];
        // Encryption fails only for plaintexts beyond 2^38 bytes; this one is empty.
        let id = cipher
            .encrypt_in_place_detached(&XNonce::default(), KEY_ID_AAD, &mut empty)
            .map_or(0, |tag| tag[0]);
        Key { id, cipher }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key {{ id: {:#04x} }}", self.id)
    }
}

/// Why [`Sealer::seal`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The plaintext does not fit in one datagram.
    #[error("plaintext of {len} bytes exceeds the {max}-byte limit of a sealed datagram")]
    TooLarge { len: usize, max: usize },
    /// The sender has sealed 2^64 datagrams; it must restart with a new sender id.
    #[error("datagram counter exhausted; restart with a new sender id")]
    CounterExhausted,
}

/// Seals outgoing datagrams with the primary key.
#[derive(Clone, Debug)]
pub struct Sealer {
    primary: Key,
    /// The primary, then the secondary if any: the keys peers may seal with.
    accepted: Vec<Key>,
    sender_id: u64,
    counter: u64,
}

impl Sealer {
    /// A sealer that seals with `primary`. `secondary` is the other key accepted during a
    /// rotation (see [`Sealer::opener`]); it is never used for sealing. `sender_id` must be
    /// random per process start (`rand::Rng::gen`), so that a restarted sender's counter,
    /// which starts over at 0, is not taken for a replay.
    pub fn new(primary: [u8; KEY_LEN], secondary: Option<[u8; KEY_LEN]>, sender_id: u64) -> Self {
        let primary_key = Key::new(&primary);
        let mut accepted = vec![primary_key.clone()];
        if let Some(s) = secondary.filter(|s| *s != primary) {
            accepted.push(Key::new(&s));
        }
        Sealer {
            primary: primary_key,
            accepted,
            sender_id,
            counter: 0,
        }
    }

    /// The sender id written into every datagram.
    pub fn sender_id(&self) -> u64 {
        self.sender_id
    }

    /// The counter the next datagram will carry (the number sealed so far).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The id of the key datagrams are sealed with.
    pub fn key_id(&self) -> u8 {
        self.primary.id
    }

    /// An opener that accepts both keys this sealer was given, with fresh replay windows.
    pub fn opener(&self) -> Opener {
        Opener::from_keys(self.accepted.clone())
    }

    /// Seals `plaintext` into one datagram of `plaintext.len() + OVERHEAD` bytes, with a
    /// fresh random nonce from `rng` and the next counter.
    pub fn seal(
        &mut self,
        plaintext: &[u8],
        rng: &mut impl rand::RngCore,
    ) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SealError::TooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT,
            });
        }
        let counter = self.counter;
        let next = counter.checked_add(1).ok_or(SealError::CounterExhausted)?;
        let mut nonce = XNonce::default();
        rng.fill_bytes(&mut nonce);

        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.primary.id);
        out.extend_from_slice(&self.sender_id.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&nonce);
        debug_assert_eq!(out.len(), HEADER_LEN);
        out.extend_from_slice(plaintext);

        let (header, body) = out.split_at_mut(HEADER_LEN);
        let tag = self
            .primary
            .cipher
            .encrypt_in_place_detached(&nonce, header, body)
            // Only fails beyond 2^38 bytes, far above MAX_PLAINTEXT.
            .map_err(|_| SealError::TooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT,
            })?;
        out.extend_from_slice(&tag);
        self.counter = next;
        Ok(out)
    }
}

/// Why [`Opener::open`] rejected a datagram. Checked in this order, so a datagram gets the
/// first reason that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejected {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram larger than the sealed size limit")]
    Oversized,
    /// Shorter than a header and a tag.
    #[error("datagram too short to be sealed")]
    Truncated,
    /// Does not start with "VF".
    #[error("not a vip-fabric datagram (bad magic)")]
    BadMagic,
    /// A wire format version this build does not read.
    #[error("unsupported datagram version")]
    BadVersion,
    /// Sealed with a key this node does not hold (or a forged key id).
    #[error("sealed with an unknown key")]
    UnknownKey,
    /// The tag did not verify: forged, corrupted, or sealed with a different key that
    /// happens to share the id.
    #[error("authentication failed")]
    Forged,
    /// Authentic, but already seen or too old for the replay window.
    #[error("replayed or too old")]
    Replayed,
}

impl Rejected {
    /// Every reason, in check order.
    pub const ALL: [Rejected; 7] = [
        Rejected::Oversized,
        Rejected::Truncated,
        Rejected::BadMagic,
        Rejected::BadVersion,
        Rejected::UnknownKey,
        Rejected::Forged,
        Rejected::Replayed,
    ];

    /// A short snake_case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Oversized => "oversized",
            Rejected::Truncated => "truncated",
            Rejected::BadMagic => "bad_magic",
            Rejected::BadVersion => "bad_version",
            Rejected::UnknownKey => "unknown_key",
            Rejected::Forged => "forged",
            Rejected::Replayed => "replayed",
        }
    }
}

/// How many datagrams an [`Opener`] accepted and rejected, per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts {
    pub accepted: u64,
    pub oversized: u64,
    pub truncated: u64,
    pub bad_magic: u64,
    pub bad_version: u64,
    pub unknown_key: u64,
    pub forged: u64,
    pub replayed: u64,
}

impl RejectCounts {
    /// The count for one reason.
    pub fn get(&self, reason: Rejected) -> u64 {
        match reason {
            Rejected::Oversized => self.oversized,
            Rejected::Truncated => self.truncated,
            Rejected::BadMagic => self.bad_magic,
            Rejected::BadVersion => self.bad_version,
            Rejected::UnknownKey => self.unknown_key,
            Rejected::Forged => self.forged,
            Rejected::Replayed => self.replayed,
        }
    }

    /// All rejections, whatever the reason.
    pub fn rejected(&self) -> u64 {
        Rejected::ALL.iter().map(|r| self.get(*r)).sum()
    }

    fn bump(&mut self, reason: Rejected) {
        let c = match reason {
            Rejected::Oversized => &mut self.oversized,
            Rejected::Truncated => &mut self.truncated,
            Rejected::BadMagic => &mut self.bad_magic,
            Rejected::BadVersion => &mut self.bad_version,
            Rejected::UnknownKey => &mut self.unknown_key,
            Rejected::Forged => &mut self.forged,
            Rejected::Replayed => &mut self.replayed,
        };
        *c = c.saturating_add(1);
    }
}

/// Sliding replay window over one sender's counters, as in IPsec (RFC 4303 §3.4.3) and
/// WireGuard: each counter is accepted once; a counter at or below `highest - 64`, or one
/// already seen, is rejected. Counters may start anywhere (the first one seen is accepted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (meaningless until `seen_any`).
    highest: u64,
    /// Bit `i` set: counter `highest - i` has been accepted.
    bitmap: u64,
    seen_any: bool,
}

impl ReplayWindow {
    /// An empty window: accepts any first counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest counter accepted so far, if any.
    pub fn highest(&self) -> Option<u64> {
        self.seen_any.then_some(self.highest)
    }

    /// Whether `counter` is new and within the window, without recording it.
    pub fn check(&self, counter: u64) -> bool {
        if !self.seen_any || counter > self.highest {
            return true;
        }
        let age = self.highest - counter;
        age < WINDOW && self.bitmap & (1 << age) == 0
    }

    /// Accepts `counter` (returns true and records it) if it is new and within the window;
    /// otherwise returns false and changes nothing.
    pub fn check_and_update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if !self.seen_any {
            self.seen_any = true;
            self.highest = counter;
            self.bitmap = 1;
        } else if counter > self.highest {
            let shift = counter - self.highest;
            self.bitmap = if shift >= WINDOW {
                1
            } else {
                (self.bitmap << shift) | 1
            };
            self.highest = counter;
        } else {
            self.bitmap |= 1 << (self.highest - counter);
        }
        true
    }
}

#[derive(Clone, Copy, Debug)]
struct SenderState {
    window: ReplayWindow,
    /// Value of `Opener::tick` when this sender was last accepted.
    last_seen: u64,
}

/// Opens (verifies, decrypts and replay-checks) incoming datagrams.
#[derive(Debug)]
pub struct Opener {
    keys: Vec<Key>,
    windows: HashMap<u64, SenderState>,
    /// Logical clock: bumped on every accepted datagram, orders senders by recency.
    tick: u64,
    counts: RejectCounts,
}

impl Opener {
    /// An opener that accepts datagrams sealed with any of `keys` (normally one, or two
    /// during a rotation). Duplicates are ignored; with no keys every datagram is
    /// [`Rejected::UnknownKey`].
    pub fn new(keys: &[[u8; KEY_LEN]]) -> Self {
        let mut unique: Vec<&[u8; KEY_LEN]> = Vec::with_capacity(keys.len());
        for k in keys {
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        Self::from_keys(unique.into_iter().map(Key::new).collect())
    }

    fn from_keys(keys: Vec<Key>) -> Self {
        Opener {
            keys,
            windows: HashMap::new(),
            tick: 0,
            counts: RejectCounts::default(),
        }
    }

    /// Ids of the keys this opener accepts.
    pub fn key_ids(&self) -> Vec<u8> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// Counts of accepted and rejected datagrams since creation.
    pub fn counts(&self) -> &RejectCounts {
        &self.counts
    }

    /// Number of senders whose replay windows are kept (at most [`MAX_SENDERS`]).
    pub fn senders(&self) -> usize {
        self.windows.len()
    }

    /// The plaintext of `datagram` if it is authentic and not a replay. Never panics,
    /// whatever the input. Every outcome is also counted (see [`Opener::counts`]).
    pub fn open(&mut self, datagram: &[u8]) -> Result<Vec<u8>, Rejected> {
        let result = self.open_inner(datagram);
        match result {
            Ok(_) => self.counts.accepted = self.counts.accepted.saturating_add(1),
            Err(r) => self.counts.bump(r),
        }
        result
    }

    fn open_inner(&mut self, datagram: &[u8]) -> Result<Vec<u8>, Rejected> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(Rejected::Oversized);
        }
        if datagram.len() < OVERHEAD {
            return Err(Rejected::Truncated);
        }
        let (header, rest) = datagram.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        if header[0..2] != MAGIC {
            return Err(Rejected::BadMagic);
        }
        if header[2] != VERSION {
            return Err(Rejected::BadVersion);
        }
        let id = header[3];
        let sender_id = u64::from_be_bytes(field(header, 4));
        let counter = u64::from_be_bytes(field(header, 12));
        let nonce = XNonce::from_slice(&header[20..HEADER_LEN]);
        let tag = Tag::from_slice(tag);

        let mut any_key = false;
        let mut plaintext = None;
        for key in self.keys.iter().filter(|k| k.id == id) {
            any_key = true;
            let mut buf = ciphertext.to_vec();
            if key
                .cipher
                .decrypt_in_place_detached(nonce, header, &mut buf, tag)
                .is_ok()
            {
                plaintext = Some(buf);
                break;
            }
        }
        let plaintext = match plaintext {
            Some(p) => p,
            None if any_key => return Err(Rejected::Forged),
            None => return Err(Rejected::UnknownKey),
        };

        // Authentic: only now may the sender's window be created or moved.
        if !self.accept_counter(sender_id, counter) {
            return Err(Rejected::Replayed);
        }
        Ok(plaintext)
    }

    fn accept_counter(&mut self, sender_id: u64, counter: u64) -> bool {
        let tick = self.tick;
        if let Some(state) = self.windows.get_mut(&sender_id) {
            if !state.window.check_and_update(counter) {
                return false;
            }
            state.last_seen = tick;
        } else {
            if self.windows.len() >= MAX_SENDERS {
                let oldest = self
                    .windows
                    .iter()
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(id, _)| *id);
                if let Some(oldest) = oldest {
                    self.windows.remove(&oldest);
                }
            }
            let mut window = ReplayWindow::new();
            window.check_and_update(counter);
            self.windows.insert(
                sender_id,
                SenderState {
                    window,
                    last_seen: tick,
                },
            );
        }
        self.tick = tick.wrapping_add(1);
        true
    }
}

/// Eight header bytes from `at`; the caller has checked the header length.
fn field(header: &[u8], at: usize) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&header[at..at + 8]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const A: [u8; KEY_LEN] = [0xAA; KEY_LEN];
    const B: [u8; KEY_LEN] = [0xBB; KEY_LEN];

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// Two keys whose ids differ (A and B are fixed, so this is checked once).
    #[test]
    fn test_keys_have_distinct_ids() {
        assert_ne!(key_id(&A), key_id(&B));
    }

    #[test]
    fn round_trip() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 42);
        let mut opener = Opener::new(&[A]);
        for msg in [&b""[..], b"hello", &[0u8; MAX_PLAINTEXT]] {
            let d = sealer.seal(msg, &mut rng).unwrap();
            assert_eq!(d.len(), msg.len() + OVERHEAD);
            assert!(d.len() <= MAX_DATAGRAM);
            assert_eq!(&d[0..2], b"VF");
            assert_eq!(d[2], VERSION);
            assert_eq!(d[3], key_id(&A));
            assert_eq!(u64::from_be_bytes(field(&d, 4)), 42);
            assert_eq!(opener.open(&d).unwrap(), msg);
        }
        assert_eq!(sealer.counter(), 3);
        assert_eq!(opener.counts().accepted, 3);
        assert_eq!(opener.counts().rejected(), 0);
    }

    #[test]
    fn ciphertext_hides_plaintext_and_nonces_differ() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 1);
        let msg = b"a secret membership update";
        let d1 = sealer.seal(msg, &mut rng).unwrap();
        let d2 = sealer.seal(msg, &mut rng).unwrap();
        assert!(!d1.windows(msg.len()).any(|w| w == msg));
        assert_ne!(d1[20..44], d2[20..44], "nonces must be fresh");
        assert_ne!(d1[44..], d2[44..]);
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 9);
        let original = sealer.seal(b"membership update", &mut rng).unwrap();
        for byte in 0..original.len() {
            for bit in 0..8 {
                let mut d = original.clone();
                d[byte] ^= 1 << bit;
                // A fresh opener each time, so a rejection cannot be a replay verdict.
                let mut opener = Opener::new(&[A]);
                let r = opener.open(&d).unwrap_err();
                let expected: &[Rejected] = match byte {
                    0 | 1 => &[Rejected::BadMagic],
                    2 => &[Rejected::BadVersion],
                    3 => &[Rejected::UnknownKey],
                    _ => &[Rejected::Forged],
                };
                assert!(expected.contains(&r), "byte {byte} bit {bit}: {r:?}");
                assert_eq!(opener.senders(), 0, "a forgery must not create a window");
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 9);
        let original = sealer.seal(b"membership update", &mut rng).unwrap();
        let mut opener = Opener::new(&[A]);
        for len in 0..original.len() {
            let r = opener.open(&original[..len]).unwrap_err();
            if len < OVERHEAD {
                assert_eq!(r, Rejected::Truncated, "len {len}");
            } else {
                assert_eq!(r, Rejected::Forged, "len {len}");
            }
        }
        // None of that poisoned the window: the intact datagram still opens.
        assert!(opener.open(&original).is_ok());
    }

    #[test]
    fn replay_is_rejected() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 5);
        let mut opener = Opener::new(&[A]);
        let d = sealer.seal(b"x", &mut rng).unwrap();
        assert!(opener.open(&d).is_ok());
        assert_eq!(opener.open(&d), Err(Rejected::Replayed));
        assert_eq!(opener.open(&d), Err(Rejected::Replayed));
        assert_eq!(opener.counts().replayed, 2);
        assert_eq!(opener.counts().get(Rejected::Replayed), 2);
    }

    #[test]
    fn reordering_within_window_accepted_outside_rejected() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 5);
        let mut opener = Opener::new(&[A]);
        let ds: Vec<Vec<u8>> = (0..200)
            .map(|i: u32| sealer.seal(&i.to_be_bytes(), &mut rng).unwrap())
            .collect();
        // Deliver 100 first, then 99 down to 37 (ages 1..=63): all accepted, once.
        assert!(opener.open(&ds[100]).is_ok());
        for i in (37..100).rev() {
            assert_eq!(
                opener.open(&ds[i]).unwrap(),
                (i as u32).to_be_bytes(),
                "{i}"
            );
        }
        for (i, d) in ds.iter().enumerate().take(101).skip(37) {
            assert_eq!(opener.open(d), Err(Rejected::Replayed), "{i}");
        }
        // Age 64 and beyond: at or below highest - 64, rejected.
        assert_eq!(opener.open(&ds[36]), Err(Rejected::Replayed));
        assert_eq!(opener.open(&ds[0]), Err(Rejected::Replayed));
        // Newer ones still fine; then a jump moves the window past everything before.
        assert!(opener.open(&ds[101]).is_ok());
        assert!(opener.open(&ds[199]).is_ok());
        assert_eq!(opener.open(&ds[135]), Err(Rejected::Replayed));
        assert!(opener.open(&ds[136]).is_ok());
    }

    #[test]
    fn replay_window_unit() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        assert!(w.check_and_update(0));
        assert!(!w.check_and_update(0));
        assert!(w.check_and_update(5));
        assert!(w.check_and_update(1));
        assert!(!w.check_and_update(1));
        assert!(w.check_and_update(2)); // below the highest, never seen: accepted
        assert!(!w.check_and_update(2));
        assert_eq!(w.highest(), Some(5));
        assert!(w.check_and_update(68)); // 68 - 64 = 4: 4 now too old, 5 still in window
        assert!(!w.check(4));
        assert!(!w.check(5));
        assert!(w.check(6));
        assert!(w.check_and_update(u64::MAX));
        assert!(!w.check_and_update(u64::MAX));
        assert!(!w.check_and_update(u64::MAX - 64));
        assert!(w.check_and_update(u64::MAX - 63));
        // A window may start at any counter.
        let mut w = ReplayWindow::new();
        assert!(w.check_and_update(1_000_000));
        assert!(w.check_and_update(999_937));
        assert!(!w.check_and_update(999_936));
    }

    #[test]
    fn restarted_sender_with_new_id_is_accepted() {
        let mut rng = rng();
        let mut opener = Opener::new(&[A]);
        let mut before = Sealer::new(A, None, 1);
        for _ in 0..100 {
            assert!(opener.open(&before.seal(b"a", &mut rng).unwrap()).is_ok());
        }
        let mut after = Sealer::new(A, None, 2);
        assert!(opener.open(&after.seal(b"b", &mut rng).unwrap()).is_ok());
    }

    #[test]
    fn key_rotation() {
        let mut rng = rng();
        // A node already rotated to B (keeping A accepted) talks to one holding [A, B].
        let mut new_b = Sealer::new(B, Some(A), 1);
        let mut both = Opener::new(&[A, B]);
        let d = new_b.seal(b"rotated", &mut rng).unwrap();
        assert_eq!(d[3], key_id(&B));
        assert_eq!(both.open(&d).unwrap(), b"rotated");
        // One that still holds only A cannot open it, and says why.
        let mut only_a = Opener::new(&[A]);
        assert_eq!(only_a.open(&d), Err(Rejected::UnknownKey));
        assert_eq!(only_a.counts().unknown_key, 1);
        // Old-key datagrams are still accepted by the rotating node.
        let mut old_a = Sealer::new(A, None, 2);
        let mut b_opener = new_b.opener();
        assert_eq!(b_opener.key_ids(), vec![key_id(&B), key_id(&A)]);
        assert!(b_opener
            .open(&old_a.seal(b"old", &mut rng).unwrap())
            .is_ok());
        assert!(b_opener
            .open(&new_b.seal(b"new", &mut rng).unwrap())
            .is_ok());
    }

    #[test]
    fn same_id_different_key_is_forged() {
        // Find a key that shares A's id but differs (expected within ~256 tries).
        let target = key_id(&A);
        let other = (0u32..)
            .map(|i| {
                let mut k = [0u8; KEY_LEN];
                k[..4].copy_from_slice(&i.to_le_bytes());
                k
            })
            .find(|k| key_id(k) == target && *k != A)
            .unwrap();
        let mut rng = rng();
        let d = Sealer::new(other, None, 1).seal(b"x", &mut rng).unwrap();
        assert_eq!(Opener::new(&[A]).open(&d), Err(Rejected::Forged));
        // Holding both colliding keys, each opens its own datagrams.
        let mut both = Opener::new(&[A, other]);
        assert!(both.open(&d).is_ok());
        let d = Sealer::new(A, None, 2).seal(b"y", &mut rng).unwrap();
        assert!(both.open(&d).is_ok());
    }

    #[test]
    fn oversized_rejected() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 1);
        assert_eq!(
            sealer.seal(&[0; MAX_PLAINTEXT + 1], &mut rng),
            Err(SealError::TooLarge {
                len: MAX_PLAINTEXT + 1,
                max: MAX_PLAINTEXT
            })
        );
        assert_eq!(sealer.counter(), 0, "a refused seal uses no counter");
        let mut opener = Opener::new(&[A]);
        assert_eq!(
            opener.open(&[0; MAX_DATAGRAM + 1]),
            Err(Rejected::Oversized)
        );
        // An authentic datagram padded past the limit is rejected before any crypto.
        let mut d = sealer.seal(&[1; MAX_PLAINTEXT], &mut rng).unwrap();
        assert_eq!(d.len(), MAX_DATAGRAM);
        d.push(0);
        assert_eq!(opener.open(&d), Err(Rejected::Oversized));
        assert_eq!(opener.counts().oversized, 2);
    }

    #[test]
    fn counter_exhaustion_refuses() {
        let mut rng = rng();
        let mut sealer = Sealer::new(A, None, 1);
        sealer.counter = u64::MAX;
        assert_eq!(
            sealer.seal(b"x", &mut rng),
            Err(SealError::CounterExhausted)
        );
    }

    #[test]
    fn sender_table_is_bounded_and_evicts_least_recent() {
        let mut rng = rng();
        let mut opener = Opener::new(&[A]);
        let mut sealers: Vec<Sealer> = (0..=MAX_SENDERS as u64)
            .map(|id| Sealer::new(A, None, id))
            .collect();
        let first = sealers[0].seal(b"0", &mut rng).unwrap();
        assert!(opener.open(&first).is_ok());
        for s in sealers.iter_mut().take(MAX_SENDERS).skip(1) {
            assert!(opener.open(&s.seal(b"n", &mut rng).unwrap()).is_ok());
        }
        assert_eq!(opener.senders(), MAX_SENDERS);
        // Sender 0 is seen again, so sender 1 is now the least recently seen.
        assert!(opener
            .open(&sealers[0].seal(b"0", &mut rng).unwrap())
            .is_ok());
        let newcomer = sealers[MAX_SENDERS].seal(b"new", &mut rng).unwrap();
        assert!(opener.open(&newcomer).is_ok());
        assert_eq!(opener.senders(), MAX_SENDERS);
        // Sender 0 kept its window (its replay is still caught).
        assert_eq!(opener.open(&first), Err(Rejected::Replayed));
        assert!(opener.windows.contains_key(&0));
        assert!(!opener.windows.contains_key(&1));
    }

    #[test]
    fn key_debug_hides_bytes() {
        let s = format!("{:?}", Sealer::new(A, None, 1));
        assert!(
            !s.contains("170") && !s.to_lowercase().contains("aa, "),
            "{s}"
        );
    }

    #[test]
    fn duplicate_and_missing_keys() {
        assert_eq!(Opener::new(&[A, A]).key_ids().len(), 1);
        assert_eq!(Sealer::new(A, Some(A), 1).opener().key_ids().len(), 1);
        let mut rng = rng();
        let d = Sealer::new(A, None, 1).seal(b"x", &mut rng).unwrap();
        assert_eq!(Opener::new(&[]).open(&d), Err(Rejected::UnknownKey));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Arbitrary bytes never panic `open` and are never accepted.
        #[test]
        fn random_bytes_never_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut opener = Opener::new(&[A, B]);
            prop_assert!(opener.open(&bytes).is_err());
        }
    }

    // These two run the AEAD on every case, which is slow in unoptimized test builds; the
    // fuzz target (fuzz/fuzz_targets/open_datagram.rs) explores the same ground in depth.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Arbitrary bytes behind a valid-looking header (right magic, version and key id)
        /// reach the AEAD and are still never accepted.
        #[test]
        fn random_bodies_behind_valid_header_never_accepted(
            body in proptest::collection::vec(any::<u8>(), 0..1400),
            sender in any::<u64>(),
        ) {
            let mut d = vec![b'V', b'F', VERSION, key_id(&A)];
            d.extend_from_slice(&sender.to_be_bytes());
            d.extend_from_slice(&body);
            let mut opener = Opener::new(&[A]);
            prop_assert!(opener.open(&d).is_err());
            prop_assert_eq!(opener.senders(), 0);
        }

        /// Random mutations of a valid datagram are rejected unless they leave it unchanged.
        #[test]
        fn mutations_never_accepted(
            plaintext in proptest::collection::vec(any::<u8>(), 0..MAX_PLAINTEXT),
            seed in any::<u64>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..8),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let original = Sealer::new(A, None, seed).seal(&plaintext, &mut rng).unwrap();
            let mut d = original.clone();
            for (pos, val, op) in edits {
                match op {
                    // Overwrite a byte.
                    0 if !d.is_empty() => { let i = pos % d.len(); d[i] = val; }
                    // Flip bits of a byte.
                    1 if !d.is_empty() => { let i = pos % d.len(); d[i] ^= val | 1; }
                    // Delete a byte.
                    2 if !d.is_empty() => { d.remove(pos % d.len()); }
                    // Insert a byte.
                    _ => { let i = pos % (d.len() + 1); d.insert(i, val); }
                }
            }
            let mut opener = Opener::new(&[A]);
            let result = opener.open(&d);
            if d == original {
                prop_assert_eq!(result, Ok(plaintext));
            } else {
                prop_assert!(result.is_err());
            }
        }
    }
}
