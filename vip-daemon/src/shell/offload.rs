//! Receive VLAN offload, turned off on the interfaces XDP balances on.
//!
//! With `rx-vlan-offload` (NETIF_F_HW_VLAN_CTAG_RX, and its 802.1ad twin
//! NETIF_F_HW_VLAN_STAG_RX) on, the driver strips the 802.1Q tag into the packet's metadata
//! before XDP runs: the program sees an untagged frame, rewrites its MACs and sends it back
//! out with `XDP_TX` without the tag, i.e. onto the native VLAN instead of the VIP's. Turning
//! the feature off keeps the tag in the frame, where the program parses and keeps it.
//!
//! Done through the classic ethtool ioctl (`SIOCETHTOOL`) with the feature-name string set
//! (ETHTOOL_GSTRINGS) and ETHTOOL_GFEATURES / ETHTOOL_SFEATURES: it needs nothing but libc,
//! finds the feature bits by name (their numbers change between kernels) and covers STAG too,
//! which the legacy ETHTOOL_SFLAGS / ETH_FLAG_RXVLAN does not. No maintained crate wraps the
//! ethtool netlink family's feature *set* request today; this is ~100 lines of plain ioctl.
use std::{io, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// The receive VLAN-stripping features, by their kernel names (`ethtool -k` shows the first
/// as `rx-vlan-offload`).
pub const RX_VLAN_FEATURES: [&str; 2] = ["rx-vlan-hw-parse", "rx-vlan-stag-hw-parse"];

#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("interface name {0:?} is not usable with ethtool (empty, too long or has NUL)")]
    Name(String),
    #[error("ethtool {what} on {iface}: {source}")]
    Ioctl {
        iface: String,
        what: &'static str,
        source: io::Error,
    },
    /// The driver does not let the feature be changed (it is "[fixed]" in `ethtool -k`).
    #[error("{iface}: {feature} is on and the driver does not allow turning it off")]
    Fixed {
        iface: String,
        feature: &'static str,
    },
    /// The kernel accepted the request but the feature stayed on.
    #[error("{iface}: {feature} is still on after turning it off")]
    StillOn {
        iface: String,
        feature: &'static str,
    },
}

/// What [`rx_vlan_off`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RxVlanOff {
    /// Features that were on and are now off.
    pub turned_off: Vec<&'static str>,
    /// Features that were already off (or that the device does not have at all).
    pub already_off: Vec<&'static str>,
}

/// Turns receive VLAN offload off on `iface` (in the calling thread's network namespace).
/// Features the device does not know are skipped; a feature that is on and cannot be turned
/// off is an error, after the others were handled.
pub fn rx_vlan_off(iface: &str) -> Result<RxVlanOff, OffloadError> {
    let e = Ethtool::open(iface)?;
    let names = e.feature_names()?;
    let words = names.len().div_ceil(32);
    let before = e.features(words)?;
    let mut out = RxVlanOff::default();
    let mut to_clear = Vec::new();
    for feature in RX_VLAN_FEATURES {
        let Some(bit) = names.iter().position(|n| n == feature) else {
            out.already_off.push(feature);
            continue;
        };
        if !before.active(bit) {
            out.already_off.push(feature);
        } else if !before.available(bit) {
            return Err(OffloadError::Fixed {
                iface: iface.into(),
                feature,
            });
        } else {
            to_clear.push((feature, bit));
        }
    }
    if to_clear.is_empty() {
        return Ok(out);
    }
    let bits: Vec<usize> = to_clear.iter().map(|(_, b)| *b).collect();
    e.clear_features(words, &bits)?;
    let after = e.features(words)?;
    for (feature, bit) in to_clear {
        if after.active(bit) {
            return Err(OffloadError::StillOn {
                iface: iface.into(),
                feature,
            });
        }
        out.turned_off.push(feature);
    }
    Ok(out)
}

/// Whether each of [`RX_VLAN_FEATURES`] is on for `iface` (false when the device lacks it).
pub fn rx_vlan_state(iface: &str) -> Result<[bool; 2], OffloadError> {
    let e = Ethtool::open(iface)?;
    let names = e.feature_names()?;
    let f = e.features(names.len().div_ceil(32))?;
    Ok(RX_VLAN_FEATURES.map(|n| {
        names
            .iter()
            .position(|x| x == n)
            .is_some_and(|b| f.active(b))
    }))
}

/// `struct ifreq` as SIOCETHTOOL reads it: the name, then a pointer to the ethtool command.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

struct Ethtool {
    sock: OwnedFd,
    iface: String,
}

/// Feature words from ETHTOOL_GFEATURES: (available, requested, active, never_changed) each.
struct Features(Vec<[u32; 4]>);

impl Features {
    fn word(&self, bit: usize, field: usize) -> bool {
        self.0
            .get(bit / 32)
            .is_some_and(|w| w[field] & (1 << (bit % 32)) != 0)
    }
    /// Changeable by the user (`hw_features`).
    fn available(&self, bit: usize) -> bool {
        self.word(bit, 0)
    }
    fn active(&self, bit: usize) -> bool {
        self.word(bit, 2)
    }
}

impl Ethtool {
    fn open(iface: &str) -> Result<Self, OffloadError> {
        if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains('\0') {
            return Err(OffloadError::Name(iface.into()));
        }
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(OffloadError::Ioctl {
                iface: iface.into(),
                what: "socket",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self {
            // SAFETY: fd is a fresh descriptor nobody else owns.
            sock: unsafe { OwnedFd::from_raw_fd(fd) },
            iface: iface.into(),
        })
    }

    /// SIOCETHTOOL with the command in `buf`.
    fn ioctl(&self, what: &'static str, buf: &mut Buf) -> Result<(), OffloadError> {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: buf.0.as_mut_ptr().cast(),
            _pad: [0; 16],
        };
        req.name[..self.iface.len()].copy_from_slice(self.iface.as_bytes());
        // SAFETY: req points at a buffer sized for the command's reply (callers size it from
        // the counts the kernel gave); both outlive the call.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            return Err(OffloadError::Ioctl {
                iface: self.iface.clone(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The names of the feature bits, by bit number.
    fn feature_names(&self) -> Result<Vec<String>, OffloadError> {
        // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[]; }
        let mut info = Buf::new(24);
        info.put(0, ETHTOOL_GSSET_INFO);
        info.put(8, 1 << ETH_SS_FEATURES); // low word of the u64 mask
        self.ioctl("GSSET_INFO", &mut info)?;
        // The kernel clears the mask bit of a set the device does not have.
        let count = if info.get(8) & (1 << ETH_SS_FEATURES) != 0 {
            info.get(16) as usize
        } else {
            0
        };
        // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[len * 32]; }
        let mut buf = Buf::new(12 + count * ETH_GSTRING_LEN);
        buf.put(0, ETHTOOL_GSTRINGS);
        buf.put(4, ETH_SS_FEATURES);
        buf.put(8, count as u32);
        self.ioctl("GSTRINGS", &mut buf)?;
        Ok(buf.bytes()[12..12 + count * ETH_GSTRING_LEN]
            .chunks(ETH_GSTRING_LEN)
            .map(|s| {
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .collect())
    }

    fn features(&self, words: usize) -> Result<Features, OffloadError> {
        // struct ethtool_gfeatures { u32 cmd, size; struct { u32 available, requested,
        // active, never_changed; } features[size]; }
        let mut buf = Buf::new(8 + 16 * words);
        buf.put(0, ETHTOOL_GFEATURES);
        buf.put(4, words as u32);
        self.ioctl("GFEATURES", &mut buf)?;
        let block = |i: usize| [0, 4, 8, 12].map(|f| buf.get(8 + 16 * i + f));
        Ok(Features((0..words).map(block).collect()))
    }

    fn clear_features(&self, words: usize, bits: &[usize]) -> Result<(), OffloadError> {
        // struct ethtool_sfeatures { u32 cmd, size; struct { u32 valid, requested; }
        // features[size]; }: each valid bit takes its requested value, 0 here.
        let mut buf = Buf::new(8 + 8 * words);
        buf.put(0, ETHTOOL_SFEATURES);
        buf.put(4, words as u32);
        for &bit in bits {
            let at = 8 + 8 * (bit / 32);
            buf.put(at, buf.get(at) | 1 << (bit % 32));
        }
        self.ioctl("SFEATURES", &mut buf)
    }
}

/// A zeroed ethtool command buffer, 8-byte aligned (the kernel structs hold u64 fields), read
/// and written as native-endian u32s at byte offsets.
struct Buf(Vec<u64>);

impl Buf {
    fn new(bytes: usize) -> Self {
        Self(vec![0; bytes.div_ceil(8)])
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
    fn get(&self, at: usize) -> u32 {
        let b = self.bytes();
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    fn put(&mut self, at: usize, v: u32) {
        let mut b = self.bytes();
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        for (w, c) in self.0.iter_mut().zip(b.chunks(8)) {
            *w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_words_at_byte_offsets() {
        let mut b = Buf::new(12);
        b.put(0, 0x3a);
        b.put(4, 0xdead_beef);
        b.put(8, 7);
        assert_eq!((b.get(0), b.get(4), b.get(8)), (0x3a, 0xdead_beef, 7));
        assert_eq!(b.0.len(), 2, "rounded up to whole u64 words");
        assert_eq!(&b.bytes()[4..8], &0xdead_beef_u32.to_ne_bytes());
    }

    #[test]
    fn feature_bits() {
        let f = Features(vec![[0b01, 0, 0b11, 0], [0, 0, 1 << 5, 0]]);
        assert!(f.available(0) && !f.available(1));
        assert!(f.active(0) && f.active(1) && !f.active(2) && f.active(37));
        assert!(!f.active(64), "beyond the words: off");
    }

    #[test]
    fn reads_loopback_features_by_name() {
        // GFEATURES needs no privilege; lo has the VLAN features as fixed-off bits.
        assert_eq!(rx_vlan_state("lo").expect("ethtool on lo"), [false, false]);
        assert!(matches!(
            rx_vlan_state("no-such-if0"),
            Err(OffloadError::Ioctl { .. })
        ));
        assert!(matches!(
            rx_vlan_off("a-name-too-long-for-linux"),
            Err(OffloadError::Name(_))
        ));
    }
}
