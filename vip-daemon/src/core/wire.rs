//! The gossip wire: one versioned codec for every item the cluster gossips besides
//! membership (claims, health, admin writes, ...), so that nodes of two releases can share a
//! cluster during a rolling upgrade.
//!
//! Pure: no IO. foca hands the receiver exactly the bytes one sender gave to
//! `add_broadcast` (one item), so an item this node cannot read is skipped on its own and
//! never costs the rest of its datagram. The sealed datagram (`core::seal`) wraps the whole
//! foca packet; this module sees plaintext items only.
//!
//! # Wire format (version 1)
//!
//! ```text
//! item   := version:u8  kind:u8  origin:str  item_version:u64  fields(kind)  trailing*
//! str    := len:u8  len bytes of UTF-8           (at most 255 bytes)
//! bool   := u8, 0 or 1                           (any other byte: malformed)
//! opt<T> := 0  |  1 T                            (any other tag: malformed)
//! u32, u64: big-endian
//!
//! kind  name        fields
//!    1  Claim       vip:str owner:str epoch:u64
//!    2  Released    vip:str owner:str epoch:u64
//!    3  Health      vip:str backend:str up:bool
//!    4  Service     vip:str backend:str listening:bool
//!    5  Admin       vip:str backend:str admin:str weight:opt<u32>
//!                   drain_started_ms:opt<u64> drain_timeout_ms:opt<u64> at:u64 by:str
//!    6  NodeState   node:str reason:opt<str>
//!    7  Writer      vip:str backend:str at:u64 by:str
//! ```
//!
//! Kind 0 is never assigned; kind [`TEST_KIND`] (255) is reserved for tests of a "newer"
//! node. The encoding is canonical: [`decode`] of the bytes [`encode`] wrote gives the item
//! back, and [`encode`] of a decoded item gives the bytes it was decoded from, up to any
//! trailing bytes (tests `wire_random_bytes_never_panic`, `wire_random_items_round_trip`).
//!
//! # Decoding
//!
//! [`decode`] answers one of
//! * [`Decoded::Item`]: a known kind, all its fields read;
//! * [`Decoded::Unknown`]: version 1, a kind this build does not know, with a well-formed
//!   header (origin and item version). Skipped and counted (`unknown_item`);
//! * [`Decoded::Newer`]: a version byte above [`VERSION`]. Nothing after it is read. Skipped
//!   and counted (`newer_wire`);
//! * `Err(`[`WireError`]`)`: empty, version 0, truncated, a string that is not UTF-8, a bool
//!   or option tag other than 0/1. Malformed: the caller rejects it.
//!
//! It never panics and allocates at most the strings it returns (each at most 255 bytes,
//! and never more than the input holds).
//!
//! # Compatibility rules
//!
//! What a newer release may do *without* raising [`VERSION`] (older nodes keep reading
//! everything they know):
//! 1. **Add a kind** (the next unused number). Older nodes skip it as `unknown_item` and
//!    read the rest of the datagram (tests `wire_unknown_kind_is_skipped` and, through foca,
//!    `shell::gossip::tests::mixed_wire_versions_agree`).
//! 2. **Append fields to a kind**, after its last field. Older nodes read the fields they
//!    know and ignore the trailing bytes (test `wire_trailing_fields_are_ignored`). A newer node
//!    must then accept the item without the new fields (from older nodes) with a default.
//!
//! What needs a new [`VERSION`] (older nodes then skip *every* item of the new version as
//! `newer_wire`, test `wire_newer_version_is_skipped`): changing the header (version, kind,
//! origin, item version), removing, reordering or retyping a field, changing the meaning of
//! a kind, or widening a length prefix. A release that bumps the version must keep sending
//! version-1 items until no older node is left, or a mixed cluster loses those items.
//!
//! Renumbering a kind is never allowed (tests `wire_kind_numbers_are_pinned`, `wire_layout_is_pinned`). An older node does
//! not relay items it skipped (foca re-gossips only what the handler accepted), so during
//! an upgrade a new kind spreads among the newer nodes only.
//!
//! Builds before wire version 1 (pre-release) gossiped items as JSON; their first byte
//! `{` (123) reads as a newer version, so they are skipped and counted, not misread.

/// The wire version this module writes, and the highest it reads.
pub const VERSION: u8 = 1;
/// Longest string field, in bytes (its length is one byte).
pub const MAX_STR: usize = 255;

/// The kind byte of each [`ItemBody`] variant. Never renumber one (see the module doc).
pub mod kind {
    pub const CLAIM: u8 = 1;
    pub const RELEASED: u8 = 2;
    pub const HEALTH: u8 = 3;
    pub const SERVICE: u8 = 4;
    pub const ADMIN: u8 = 5;
    pub const NODE_STATE: u8 = 6;
    pub const WRITER: u8 = 7;
}

/// Reserved for tests: the kind a "newer" node speaks that this build does not know.
pub const TEST_KIND: u8 = 255;

/// What the cluster tells each other besides membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemBody {
    Claim {
        vip: String,
        owner: String,
        epoch: u64,
    },
    Released {
        vip: String,
        owner: String,
        epoch: u64,
    },
    Health {
        vip: String,
        backend: String,
        up: bool,
    },
    /// From the node a backend runs on: whether the service's socket exists (sock_diag).
    Service {
        vip: String,
        backend: String,
        listening: bool,
    },
    /// An operator's admin state of a backend (`core::admin`): the write with the highest
    /// (`at`, `by`) wins on every node. `by` made the write; the item's origin may be a node
    /// re-sending it to a joiner.
    Admin {
        vip: String,
        backend: String,
        /// "enabled", "drained" or "disabled".
        admin: String,
        /// Set through the control socket; None: the config's weight.
        weight: Option<u32>,
        drain_started_ms: Option<u64>,
        drain_timeout_ms: Option<u64>,
        at: u64,
        by: String,
    },
    /// A node's service state (`core::ownership::NodeState`): out of service for `reason`
    /// (standby, a failed track condition) or in service (None). Versioned by the node's
    /// wall-clock ms of the change.
    NodeState {
        node: String,
        reason: Option<String>,
    },
    /// The writer of a primary/backup VIP, after an operator's promote or a failover.
    Writer {
        vip: String,
        backend: String,
        at: u64,
        by: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub origin: String,
    /// Newer supersedes older for the same subject (see [`Item::subject`]).
    pub version: u64,
    pub body: ItemBody,
}

impl Item {
    /// What the item is about: one node's claim on one VIP, or one node's view of one
    /// backend. Claims are per owner: a handover sends the successor's claim and then the
    /// predecessor's (older) release, and both must arrive (the release clears the
    /// predecessor from the claimants the successor waits for).
    pub fn subject(&self) -> String {
        match &self.body {
            ItemBody::Claim { vip, owner, .. } | ItemBody::Released { vip, owner, .. } => {
                format!("vip/{vip}/{owner}")
            }
            ItemBody::Health { vip, backend, .. } => {
                format!("health/{}/{vip}/{backend}", self.origin)
            }
            ItemBody::Service { vip, backend, .. } => {
                format!("service/{}/{vip}/{backend}", self.origin)
            }
            ItemBody::Admin { vip, backend, .. } => {
                format!("admin/{}/{vip}/{backend}", self.origin)
            }
            ItemBody::Writer { vip, .. } => format!("writer/{}/{vip}", self.origin),
            ItemBody::NodeState { node, .. } => format!("node/{node}"),
        }
    }

    /// Ownership items are ordered by epoch, a release after the claim of the same epoch.
    pub fn ownership_version(epoch: u64, released: bool) -> u64 {
        epoch * 2 + u64::from(released)
    }
}

impl ItemBody {
    /// The kind byte this body is written with.
    pub fn kind(&self) -> u8 {
        match self {
            ItemBody::Claim { .. } => kind::CLAIM,
            ItemBody::Released { .. } => kind::RELEASED,
            ItemBody::Health { .. } => kind::HEALTH,
            ItemBody::Service { .. } => kind::SERVICE,
            ItemBody::Admin { .. } => kind::ADMIN,
            ItemBody::NodeState { .. } => kind::NODE_STATE,
            ItemBody::Writer { .. } => kind::WRITER,
        }
    }
}

/// What [`decode`] made of one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Item(Item),
    /// A kind this build does not know (a newer node's): skip it.
    Unknown {
        kind: u8,
    },
    /// A newer wire version: skip it.
    Newer {
        version: u8,
    },
}

/// A malformed item (decoding), or an item that cannot be written (encoding).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty item")]
    Empty,
    #[error("wire version {0} was never assigned")]
    BadVersion(u8),
    #[error("item ends inside its {0} field")]
    Truncated(&'static str),
    #[error("the {0} field is not UTF-8")]
    NotUtf8(&'static str),
    #[error("the {field} field has tag {tag}, not 0 or 1")]
    BadTag { field: &'static str, tag: u8 },
    #[error("the {field} field is {len} bytes, more than {MAX_STR}")]
    TooLong { field: &'static str, len: usize },
}

/// Writes `item` as a version-[`VERSION`] item. Refuses a string field longer than
/// [`MAX_STR`] bytes, except a node's free-text out-of-service reason, which is cut at the
/// last character boundary within [`MAX_STR`].
pub fn encode(item: &Item) -> Result<Vec<u8>, WireError> {
    let mut w = Writer(Vec::with_capacity(64));
    w.0.push(VERSION);
    w.0.push(item.body.kind());
    w.str("origin", &item.origin)?;
    w.u64(item.version);
    match &item.body {
        ItemBody::Claim { vip, owner, epoch } | ItemBody::Released { vip, owner, epoch } => {
            w.str("vip", vip)?;
            w.str("owner", owner)?;
            w.u64(*epoch);
        }
        ItemBody::Health { vip, backend, up } => {
            w.str("vip", vip)?;
            w.str("backend", backend)?;
            w.0.push(u8::from(*up));
        }
        ItemBody::Service {
            vip,
            backend,
            listening,
        } => {
            w.str("vip", vip)?;
            w.str("backend", backend)?;
            w.0.push(u8::from(*listening));
        }
        ItemBody::Admin {
            vip,
            backend,
            admin,
            weight,
            drain_started_ms,
            drain_timeout_ms,
            at,
            by,
        } => {
            w.str("vip", vip)?;
            w.str("backend", backend)?;
            w.str("admin", admin)?;
            w.opt(*weight, |w, v| w.0.extend_from_slice(&v.to_be_bytes()));
            w.opt(*drain_started_ms, Writer::u64);
            w.opt(*drain_timeout_ms, Writer::u64);
            w.u64(*at);
            w.str("by", by)?;
        }
        ItemBody::NodeState { node, reason } => {
            w.str("node", node)?;
            match reason {
                None => w.0.push(0),
                Some(r) => {
                    w.0.push(1);
                    w.str("reason", cut(r))?;
                }
            }
        }
        ItemBody::Writer {
            vip,
            backend,
            at,
            by,
        } => {
            w.str("vip", vip)?;
            w.str("backend", backend)?;
            w.u64(*at);
            w.str("by", by)?;
        }
    }
    Ok(w.0)
}

/// Reads one item (see the module doc for the answers).
pub fn decode(data: &[u8]) -> Result<Decoded, WireError> {
    let mut r = Reader(data);
    let version = r.u8("version").map_err(|_| WireError::Empty)?;
    if version == 0 {
        return Err(WireError::BadVersion(0));
    }
    if version > VERSION {
        return Ok(Decoded::Newer { version });
    }
    let kind = r.u8("kind")?;
    let origin = r.str("origin")?;
    let item_version = r.u64("item_version")?;
    let body = match kind {
        kind::CLAIM | kind::RELEASED => {
            let (vip, owner, epoch) = (r.str("vip")?, r.str("owner")?, r.u64("epoch")?);
            if kind == kind::CLAIM {
                ItemBody::Claim { vip, owner, epoch }
            } else {
                ItemBody::Released { vip, owner, epoch }
            }
        }
        kind::HEALTH => ItemBody::Health {
            vip: r.str("vip")?,
            backend: r.str("backend")?,
            up: r.bool("up")?,
        },
        kind::SERVICE => ItemBody::Service {
            vip: r.str("vip")?,
            backend: r.str("backend")?,
            listening: r.bool("listening")?,
        },
        kind::ADMIN => ItemBody::Admin {
            vip: r.str("vip")?,
            backend: r.str("backend")?,
            admin: r.str("admin")?,
            weight: r.opt("weight", |r| r.u32("weight"))?,
            drain_started_ms: r.opt("drain_started_ms", |r| r.u64("drain_started_ms"))?,
            drain_timeout_ms: r.opt("drain_timeout_ms", |r| r.u64("drain_timeout_ms"))?,
            at: r.u64("at")?,
            by: r.str("by")?,
        },
        kind::NODE_STATE => ItemBody::NodeState {
            node: r.str("node")?,
            reason: r.opt("reason", |r| r.str("reason"))?,
        },
        kind::WRITER => ItemBody::Writer {
            vip: r.str("vip")?,
            backend: r.str("backend")?,
            at: r.u64("at")?,
            by: r.str("by")?,
        },
        kind => return Ok(Decoded::Unknown { kind }),
    };
    // Any bytes left are fields a newer node appended: ignored (compatibility rule 2).
    Ok(Decoded::Item(Item {
        origin,
        version: item_version,
        body,
    }))
}

/// The header of a version-1 item of any kind: (kind, origin, item version). What a test
/// "newer" node reads of its own [`TEST_KIND`] items.
pub fn header(data: &[u8]) -> Result<(u8, String, u64), WireError> {
    let mut r = Reader(data);
    match r.u8("version").map_err(|_| WireError::Empty)? {
        VERSION => Ok((r.u8("kind")?, r.str("origin")?, r.u64("item_version")?)),
        v => Err(WireError::BadVersion(v)),
    }
}

/// A version-1 item of [`TEST_KIND`], as a newer node would send a kind this build does
/// not know: the common header, then `payload`. For tests only (nothing in vipd sends it).
#[doc(hidden)]
pub fn encode_test_kind(origin: &str, version: u64, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer(vec![VERSION, TEST_KIND]);
    // A test's origin is short; an over-long one is cut like a reason.
    let _ = w.str("origin", cut(origin));
    w.u64(version);
    w.0.extend_from_slice(payload);
    w.0
}

/// `s` cut to at most [`MAX_STR`] bytes, at a character boundary.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_STR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Writer(Vec<u8>);

impl Writer {
    fn str(&mut self, field: &'static str, s: &str) -> Result<(), WireError> {
        let len = u8::try_from(s.len()).map_err(|_| WireError::TooLong {
            field,
            len: s.len(),
        })?;
        self.0.push(len);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn opt<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                write(self, v);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated(field))?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take::<1>(field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(field)?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(WireError::BadTag { field, tag }),
        }
    }

    fn str(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = usize::from(self.u8(field)?);
        if self.0.len() < len {
            return Err(WireError::Truncated(field));
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        let s = std::str::from_utf8(bytes).map_err(|_| WireError::NotUtf8(field))?;
        Ok(s.to_owned())
    }

    fn opt<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, WireError>,
    ) -> Result<Option<T>, WireError> {
        if self.bool(field)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests;
