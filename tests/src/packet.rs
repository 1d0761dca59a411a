//! Byte-exact packet builders for BPF_PROG_TEST_RUN fixtures, property tests and benchmarks,
//! plus a small reader (`parse_summary`, checksum verifiers) for asserting program outputs.
//! Builders panic on nonsensical input (mixed address families, oversized packets); the
//! readers never panic and return `None`/`false` for anything malformed.

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_IPV6: u8 = 41;
/// Identifier and sequence number of the echo requests built here.
pub const ECHO_ID: u16 = 0x4242;
pub const ECHO_SEQ: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Addr {
    pub fn octets(&self) -> &[u8] {
        match self {
            Addr::V4(a) => a,
            Addr::V6(a) => a,
        }
    }
    fn ethertype(&self) -> u16 {
        match self {
            Addr::V4(_) => ETH_P_IP,
            Addr::V6(_) => ETH_P_IPV6,
        }
    }
}

impl From<[u8; 4]> for Addr {
    fn from(a: [u8; 4]) -> Self {
        Addr::V4(a)
    }
}

impl From<[u8; 16]> for Addr {
    fn from(a: [u8; 16]) -> Self {
        Addr::V6(a)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
}

impl Flow {
    pub fn new(
        src: impl Into<Addr>,
        sport: u16,
        dst: impl Into<Addr>,
        dport: u16,
        proto: u8,
    ) -> Self {
        let (src, dst) = (src.into(), dst.into());
        Self {
            src,
            dst,
            sport,
            dport,
            proto,
        }
    }
    pub fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Self {
        Self::new(src, sport, dst, dport, IPPROTO_TCP)
    }
    pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Self {
        Self::new(src, sport, dst, dport, IPPROTO_UDP)
    }
    pub fn tcp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Self {
        Self::new(src, sport, dst, dport, IPPROTO_TCP)
    }
    pub fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Self {
        Self::new(src, sport, dst, dport, IPPROTO_UDP)
    }
}

/// Everything about a frame that is not the flow. `tos` is also the IPv6 traffic class and
/// `ttl` the IPv6 hop limit; `ip_options`, `ipv4_id` and `frag` apply to IPv4 only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// (TPID, TCI) pairs, outermost first.
    pub vlans: Vec<(u16, u16)>,
    /// Zero-padded to a multiple of 4 bytes (at most 40); sets IHL.
    pub ip_options: Vec<u8>,
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
    pub ttl: u8,
    pub tos: u8,
    pub ipv4_id: u16,
    /// IPv4 flags + fragment offset, host order (0x2000 = MF, 0x4000 = DF).
    pub frag: u16,
}

impl Default for Frame {
    fn default() -> Self {
        Self {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            vlans: Vec::new(),
            ip_options: Vec::new(),
            tcp_flags: 0x02,
            payload: Vec::new(),
            ttl: 64,
            tos: 0,
            ipv4_id: 0,
            frag: 0,
        }
    }
}

/// What `parse_summary` read. Ports are 0 unless the packet is TCP/UDP and carries the L4
/// header (i.e. is not a non-first fragment).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan_count: usize,
    /// The ethertype after the VLAN tags.
    pub ethertype: u16,
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// For IPIP / IPv6-in-IP: the inner packet (zeroed MACs, `vlan_count` 0).
    pub inner: Option<Box<Summary>>,
}

// ---- checksums ----------------------------------------------------------------------------

fn sum16(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folds the carries and complements: the value to store, or 0 when verifying a good sum.
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn pseudo(src: &Addr, dst: &Addr, proto: u8, len: usize) -> u64 {
    sum16(sum16(0, src.octets()), dst.octets()) + u64::from(proto) + len as u64
}

/// Checksum of an IPv4 header (the whole slice; bytes 10..12 are treated as zero).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let head = &header[..header.len().min(10)];
    fold(sum16(sum16(0, head), header.get(12..).unwrap_or_default()))
}

/// True when `pkt_l3` starts with an IPv4 header whose checksum is correct.
pub fn verify_ipv4_header_checksum(pkt_l3: &[u8]) -> bool {
    let first = pkt_l3.first().copied().unwrap_or_default();
    let ihl = usize::from(first & 0xf) * 4;
    first >> 4 == 4 && ihl >= 20 && pkt_l3.len() >= ihl && fold(sum16(0, &pkt_l3[..ihl])) == 0
}

/// True when the TCP/UDP/ICMP/ICMPv6 checksum of the IPv4/IPv6 packet `pkt_l3` is correct
/// (a zero UDP checksum over IPv4 counts as correct). For IPIP and IPv6-in-IP it checks the
/// inner packet instead. False for other protocols and malformed packets.
pub fn verify_l4_checksum(pkt_l3: &[u8]) -> bool {
    let Some((s, seg)) = parse_l3(pkt_l3) else {
        return false;
    };
    let v4 = s.ethertype == ETH_P_IP;
    let good = |init| seg.len() >= 8 && fold(sum16(init, seg)) == 0;
    match s.proto {
        IPPROTO_IPIP => verify_ipv4_header_checksum(seg) && verify_l4_checksum(seg),
        IPPROTO_IPV6 => verify_l4_checksum(seg),
        IPPROTO_ICMP if v4 => good(0),
        IPPROTO_UDP if v4 && seg.len() >= 8 && seg[6..8] == [0, 0] => true,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6 => {
            good(pseudo(&s.src, &s.dst, s.proto, seg.len()))
        }
        _ => false,
    }
}

/// Stores the checksum of `seg` (`init`: the pseudo-header sum) at `at`.
fn checksummed(mut seg: Vec<u8>, at: usize, init: u64, udp: bool) -> Vec<u8> {
    let c = match fold(sum16(init, &seg)) {
        0 if udp => 0xffff,
        c => c,
    };
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    seg
}

// ---- builders -----------------------------------------------------------------------------

/// Offset of the L3 header: 14 bytes of Ethernet plus 4 per VLAN tag.
pub fn l3_offset(frame: &Frame) -> usize {
    14 + 4 * frame.vlans.len()
}

/// Ethernet header (with `frame`'s MACs and tags) followed by `l3`.
pub fn ethernet(frame: &Frame, ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(l3_offset(frame) + l3.len());
    v.extend(frame.dst_mac.iter().chain(&frame.src_mac));
    for &(tpid, tci) in &frame.vlans {
        v.extend(tpid.to_be_bytes().iter().chain(&tci.to_be_bytes()));
    }
    v.extend(ethertype.to_be_bytes().iter().chain(l3));
    v
}

/// An IPv4 or IPv6 header (by the address family) carrying `payload` as protocol `proto`;
/// e.g. `ip_packet(frame, &lb, &backend, IPPROTO_IPIP, &l3_packet(frame, flow))`.
pub fn ip_packet(frame: &Frame, src: &Addr, dst: &Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(60 + payload.len());
    match (src, dst) {
        (Addr::V4(s), Addr::V4(d)) => {
            let mut opts = frame.ip_options.clone();
            opts.resize(opts.len().next_multiple_of(4), 0);
            assert!(opts.len() <= 40, "IPv4 options longer than 40 bytes");
            let hlen = 20 + opts.len();
            let total = u16::try_from(hlen + payload.len()).expect("IPv4 packet too large");
            v.extend([0x40 | (hlen / 4) as u8, frame.tos]);
            v.extend(total.to_be_bytes());
            v.extend(frame.ipv4_id.to_be_bytes());
            v.extend(frame.frag.to_be_bytes());
            v.extend([frame.ttl, proto, 0, 0]);
            v.extend(s.iter().chain(d).chain(&opts));
            let c = ipv4_checksum(&v);
            v[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (Addr::V6(s), Addr::V6(d)) => {
            let plen = u16::try_from(payload.len()).expect("IPv6 payload too large");
            v.extend((6u32 << 28 | u32::from(frame.tos) << 20).to_be_bytes());
            v.extend(plen.to_be_bytes());
            v.extend([proto, frame.ttl]);
            v.extend(s.iter().chain(d));
        }
        _ => panic!("mixed address families: {src:?} -> {dst:?}"),
    }
    v.extend_from_slice(payload);
    v
}

/// The TCP (20-byte header, seq 1, ack 0, window 65535) or UDP segment with its checksum.
fn transport(frame: &Frame, flow: &Flow) -> Vec<u8> {
    let mut seg = Vec::with_capacity(20 + frame.payload.len());
    seg.extend(flow.sport.to_be_bytes());
    seg.extend(flow.dport.to_be_bytes());
    let at = match flow.proto {
        IPPROTO_TCP => {
            seg.extend(1u32.to_be_bytes());
            seg.extend(0u32.to_be_bytes());
            seg.extend([0x50, frame.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
            16
        }
        IPPROTO_UDP => {
            let len = u16::try_from(8 + frame.payload.len()).expect("UDP payload too large");
            seg.extend(len.to_be_bytes());
            seg.extend([0, 0]);
            6
        }
        p => panic!("Flow.proto must be TCP or UDP, not {p}"),
    };
    seg.extend_from_slice(&frame.payload);
    let init = pseudo(&flow.src, &flow.dst, flow.proto, seg.len());
    checksummed(seg, at, init, flow.proto == IPPROTO_UDP)
}

/// The IP packet of `l4_frame`'s output, starting at the IP header.
pub fn l3_packet(frame: &Frame, flow: &Flow) -> Vec<u8> {
    let seg = transport(frame, flow);
    ip_packet(frame, &flow.src, &flow.dst, flow.proto, &seg)
}

/// Ethernet [+ tags] + IPv4/IPv6 + TCP/UDP + payload, all checksums correct.
pub fn l4_frame(frame: &Frame, flow: &Flow) -> Vec<u8> {
    ethernet(frame, flow.src.ethertype(), &l3_packet(frame, flow))
}

/// An IPv6 packet whose first header is an 8-byte extension header of type `next_header`
/// (hop-by-hop and destination options hold one PadN; a fragment header is an atomic
/// fragment: offset 0, M clear), followed by the TCP/UDP segment.
pub fn ipv6_with_ext_header(frame: &Frame, flow: &Flow, next_header: u8) -> Vec<u8> {
    assert!(matches!(flow.src, Addr::V6(_)), "needs an IPv6 flow");
    let mut ext = vec![flow.proto, 0, 0, 0, 0, 0, 0, 0];
    if matches!(next_header, 0 | 60) {
        ext[2..4].copy_from_slice(&[1, 4]);
    }
    ext.extend(transport(frame, flow));
    let l3 = ip_packet(frame, &flow.src, &flow.dst, next_header, &ext);
    ethernet(frame, ETH_P_IPV6, &l3)
}

/// An ICMP (v4: no pseudo header) or ICMPv6 message, `head` (its checksum, bytes 2..4, is
/// filled in) followed by `body`, in an IP packet in an Ethernet frame.
fn icmp(
    frame: &Frame,
    src: impl Into<Addr>,
    dst: impl Into<Addr>,
    head: [u8; 8],
    body: &[u8],
) -> Vec<u8> {
    let (src, dst) = (src.into(), dst.into());
    let msg = [&head[..], body].concat();
    let (proto, init) = match src {
        Addr::V4(_) => (IPPROTO_ICMP, 0),
        Addr::V6(_) => (
            IPPROTO_ICMPV6,
            pseudo(&src, &dst, IPPROTO_ICMPV6, msg.len()),
        ),
    };
    let l3 = ip_packet(frame, &src, &dst, proto, &checksummed(msg, 2, init, false));
    ethernet(frame, src.ethertype(), &l3)
}

/// ICMP destination unreachable, fragmentation needed (type 3 code 4) quoting `embedded`.
pub fn icmp4_frag_needed(
    frame: &Frame,
    outer_src: [u8; 4],
    outer_dst: [u8; 4],
    mtu: u16,
    embedded: &[u8],
) -> Vec<u8> {
    let [m0, m1] = mtu.to_be_bytes();
    let head = [3, 4, 0, 0, 0, 0, m0, m1];
    icmp(frame, outer_src, outer_dst, head, embedded)
}

/// ICMPv6 packet too big (type 2 code 0) quoting `embedded`.
pub fn icmp6_packet_too_big(
    frame: &Frame,
    outer_src: [u8; 16],
    outer_dst: [u8; 16],
    mtu: u32,
    embedded: &[u8],
) -> Vec<u8> {
    let [m0, m1, m2, m3] = mtu.to_be_bytes();
    let head = [2, 0, 0, 0, m0, m1, m2, m3];
    icmp(frame, outer_src, outer_dst, head, embedded)
}

fn echo_head(kind: u8) -> [u8; 8] {
    let ([i0, i1], [s0, s1]) = (ECHO_ID.to_be_bytes(), ECHO_SEQ.to_be_bytes());
    [kind, 0, 0, 0, i0, i1, s0, s1]
}

/// ICMP echo request (type 8) carrying `frame.payload`, id `ECHO_ID`, seq `ECHO_SEQ`.
pub fn icmp4_echo(frame: &Frame, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    icmp(frame, src, dst, echo_head(8), &frame.payload)
}

/// ICMPv6 echo request (type 128) carrying `frame.payload`, id `ECHO_ID`, seq `ECHO_SEQ`.
pub fn icmp6_echo(frame: &Frame, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    icmp(frame, src, dst, echo_head(128), &frame.payload)
}

/// Broadcast ARP request "who has `target_ip`, tell `sender_ip`" (42 bytes, no padding).
pub fn arp_request(src_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let frame = Frame {
        dst_mac: [0xff; 6],
        src_mac,
        ..Frame::default()
    };
    let arp = [
        &[0, 1, 8, 0, 6, 4, 0, 1],
        &src_mac[..],
        &sender_ip,
        &[0; 6],
        &target_ip,
    ]
    .concat();
    ethernet(&frame, ETH_P_ARP, &arp)
}

/// Neighbor solicitation for `target` to its solicited-node multicast address, hop limit
/// 255, with a source link-layer address option.
pub fn ipv6_neighbor_solicitation(src_mac: [u8; 6], src_ip: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    dst[13..].copy_from_slice(&target[13..]);
    let dst_mac = [0x33, 0x33, 0xff, target[13], target[14], target[15]];
    neighbor_solicitation(src_mac, dst_mac, src_ip, dst, target)
}

/// Neighbor solicitation for `target` sent unicast to it at `dst_mac` (neighbour
/// unreachability detection, RFC 4861 7.3.3: a router re-checking a cached entry), hop limit
/// 255, with a source link-layer address option.
pub fn ipv6_unicast_neighbor_solicitation(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: [u8; 16],
    target: [u8; 16],
) -> Vec<u8> {
    neighbor_solicitation(src_mac, dst_mac, src_ip, target, target)
}

/// A neighbor solicitation for `target` to (`dst_mac`, `dst_ip`), hop limit 255, with a
/// source link-layer address option.
fn neighbor_solicitation(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: [u8; 16],
    dst_ip: [u8; 16],
    target: [u8; 16],
) -> Vec<u8> {
    let frame = Frame {
        dst_mac,
        src_mac,
        ttl: 255,
        ..Frame::default()
    };
    let body = [&target[..], &[1, 1], &src_mac].concat();
    icmp(&frame, src_ip, dst_ip, [135, 0, 0, 0, 0, 0, 0, 0], &body)
}

// ---- reader -------------------------------------------------------------------------------

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Reads an IP packet (skipping IPv6 extension headers): its summary without L2 and the bytes
/// of the upper-layer protocol.
fn parse_l3(pkt: &[u8]) -> Option<(Summary, &[u8])> {
    let (src, dst, mut proto, mut l4, end, mut first_frag);
    if pkt.first()? >> 4 == 4 {
        (l4, end) = (usize::from(pkt[0] & 0xf) * 4, usize::from(be16(pkt, 2)?));
        if l4 < 20 || end < l4 || end > pkt.len() {
            return None;
        }
        src = Addr::V4(pkt[12..16].try_into().ok()?);
        dst = Addr::V4(pkt[16..20].try_into().ok()?);
        (proto, first_frag) = (pkt[9], be16(pkt, 6)? & 0x1fff == 0);
    } else if pkt[0] >> 4 == 6 && pkt.len() >= 40 {
        end = 40 + usize::from(be16(pkt, 4)?);
        src = Addr::V6(pkt[8..24].try_into().ok()?);
        dst = Addr::V6(pkt[24..40].try_into().ok()?);
        (proto, l4, first_frag) = (pkt[6], 40, true);
        loop {
            match proto {
                0 | 43 | 60 => {
                    (proto, l4) = (*pkt.get(l4)?, l4 + 8 + 8 * usize::from(*pkt.get(l4 + 1)?))
                }
                44 => {
                    first_frag &= be16(pkt, l4 + 2)? & 0xfff8 == 0;
                    (proto, l4) = (pkt[l4], l4 + 8);
                }
                _ => break,
            }
        }
    } else {
        return None;
    }
    let seg = pkt.get(l4..end)?;
    let (mut sport, mut dport, mut inner) = (0, 0, None);
    match proto {
        IPPROTO_TCP | IPPROTO_UDP if first_frag => (sport, dport) = (be16(seg, 0)?, be16(seg, 2)?),
        IPPROTO_IPIP | IPPROTO_IPV6 if first_frag => inner = Some(Box::new(parse_l3(seg)?.0)),
        _ => {}
    }
    let (dst_mac, src_mac, vlan_count, ethertype) = ([0; 6], [0; 6], 0, src.ethertype());
    let summary = Summary {
        dst_mac,
        src_mac,
        vlan_count,
        ethertype,
        src,
        dst,
        proto,
        sport,
        dport,
        inner,
    };
    Some((summary, seg))
}

/// Reads an Ethernet frame with any number of 802.1Q/802.1ad tags carrying IPv4 or IPv6.
/// `None` for non-IP, truncated or inconsistent frames (ethertype vs. IP version).
pub fn parse_summary(frame: &[u8]) -> Option<Summary> {
    let (mut off, mut vlan_count) = (12, 0);
    while matches!(be16(frame, off)?, ETH_P_8021Q | ETH_P_8021AD) {
        (off, vlan_count) = (off + 4, vlan_count + 1);
    }
    let (mut s, _) = parse_l3(frame.get(off + 2..)?)?;
    if s.ethertype != be16(frame, off)? {
        return None;
    }
    s.dst_mac = frame[..6].try_into().ok()?;
    s.src_mac = frame[6..12].try_into().ok()?;
    s.vlan_count = vlan_count;
    Some(s)
}

/// One random mutation: flip 1-8 bits, overwrite a byte with 0x00/0xff/random, truncate to
/// a random length, or append 1-16 random bytes.
pub fn mutate(bytes: &mut Vec<u8>, rng: &mut impl FnMut() -> u64) {
    let len = bytes.len() as u64;
    match rng() % 4 {
        0 if len > 0 => {
            for _ in 0..=rng() % 8 {
                let bit = rng() % (len * 8);
                bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
        }
        1 if len > 0 => {
            let at = (rng() % len) as usize;
            bytes[at] = [0x00, 0xff, rng() as u8][(rng() % 3) as usize];
        }
        2 => bytes.truncate((rng() % (len + 1)) as usize),
        _ => {
            for _ in 0..=rng() % 16 {
                bytes.push(rng() as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C4: [u8; 4] = [10, 0, 0, 1];
    const V4: [u8; 4] = [192, 0, 2, 10];
    const C6: [u8; 16] = 0x2001_0db8_0000_0000_0000_0000_0000_0001u128.to_be_bytes();
    const V6: [u8; 16] = 0x2001_0db8_0000_0000_0000_0000_0000_0100u128.to_be_bytes();

    fn flows() -> [Flow; 4] {
        [
            Flow::tcp4(C4, 40000, V4, 80),
            Flow::udp4(C4, 40000, V4, 53),
            Flow::tcp6(C6, 40000, V6, 443),
            Flow::udp6(C6, 40000, V6, 53),
        ]
    }

    fn expected(frame: &Frame, flow: &Flow) -> Summary {
        Summary {
            dst_mac: frame.dst_mac,
            src_mac: frame.src_mac,
            vlan_count: frame.vlans.len(),
            ethertype: flow.src.ethertype(),
            src: flow.src,
            dst: flow.dst,
            proto: flow.proto,
            sport: flow.sport,
            dport: flow.dport,
            inner: None,
        }
    }

    #[test]
    fn known_checksums() {
        // RFC 1071 section 3 example: the sum is 0xddf2.
        assert_eq!(
            fold(sum16(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            !0xddf2
        );
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x12, 0x34, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&hdr), 0xb861);
        assert!(!verify_ipv4_header_checksum(&hdr));
        hdr[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert!(verify_ipv4_header_checksum(&hdr));
        assert_eq!(ipv4_checksum(&hdr), 0xb861);
    }

    /// Frames whose checksums tcpdump -vvv reported correct.
    #[test]
    fn golden_frames() {
        let frame = Frame {
            payload: b"hi".to_vec(),
            ..Frame::default()
        };
        let udp4 = l4_frame(&frame, &Flow::udp4(C4, 40000, V4, 53));
        assert_eq!(udp4[24..26], [0xae, 0xc4]);
        assert_eq!(udp4[40..], [0x2e, 0xf0, b'h', b'i']);
        let tcp6 = l4_frame(&frame, &Flow::tcp6(C6, 40000, V6, 443));
        let tcp = [
            0x9c, 0x40, 1, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 2, 0xff, 0xff, 0x4d, 8,
        ];
        assert_eq!(tcp6[54..72], tcp);
        assert_eq!(tcp6[14..22], [0x60, 0, 0, 0, 0, 22, IPPROTO_TCP, 64]);
        // Odd length: the last byte is summed as the high half of a word.
        let hello = Frame {
            payload: b"hello".to_vec(),
            ..Frame::default()
        };
        assert_eq!(
            l4_frame(&hello, &Flow::tcp4(C4, 40000, V4, 80))[50..52],
            [0x03, 0x6f]
        );
    }

    #[test]
    fn round_trip_all_families_and_tags() {
        let tag_sets = [
            vec![],
            vec![(ETH_P_8021Q, 100)],
            vec![(ETH_P_8021AD, 10), (ETH_P_8021Q, 20)],
        ];
        for flow in flows() {
            for vlans in &tag_sets {
                let frame = Frame {
                    vlans: vlans.clone(),
                    payload: b"payload".to_vec(),
                    ..Frame::default()
                };
                let bytes = l4_frame(&frame, &flow);
                let l3 = &bytes[l3_offset(&frame)..];
                assert_eq!(l3, l3_packet(&frame, &flow));
                assert_eq!(parse_summary(&bytes), Some(expected(&frame, &flow)));
                assert!(verify_l4_checksum(l3), "{flow:?} {vlans:?}");
                assert_eq!(
                    verify_ipv4_header_checksum(l3),
                    flow.src.ethertype() == ETH_P_IP
                );
                assert!(bytes.ends_with(b"payload"));
            }
        }
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let mut frame = Frame {
            ip_options: vec![1, 1, 1],
            ..Frame::default()
        };
        let flow = Flow::tcp4(C4, 40000, V4, 80);
        let bytes = l4_frame(&frame, &flow);
        assert_eq!((bytes[14], bytes.len()), (0x46, 14 + 24 + 20));
        assert_eq!(bytes[34..38], [1, 1, 1, 0]);
        assert_eq!(bytes[38..40], 40000u16.to_be_bytes());
        assert!(verify_ipv4_header_checksum(&bytes[14..]) && verify_l4_checksum(&bytes[14..]));
        assert_eq!(parse_summary(&bytes), Some(expected(&frame, &flow)));
        frame.frag = 0x2000; // MF, offset 0: still has the ports
        assert_eq!(parse_summary(&l4_frame(&frame, &flow)).unwrap().dport, 80);
        frame.frag = 0x0010; // a later fragment: no ports
        assert_eq!(parse_summary(&l4_frame(&frame, &flow)).unwrap().dport, 0);
    }

    #[test]
    fn ipv6_extension_headers() {
        for flow in &flows()[2..] {
            for nh in [0, 43, 44, 60] {
                let bytes = ipv6_with_ext_header(&Frame::default(), flow, nh);
                assert_eq!((bytes[20], bytes[54]), (nh, flow.proto));
                assert_eq!(
                    parse_summary(&bytes),
                    Some(expected(&Frame::default(), flow))
                );
                assert!(verify_l4_checksum(&bytes[14..]), "{flow:?} {nh}");
            }
        }
    }

    #[test]
    fn ipip_inner_summary() {
        let f = Frame::default();
        let cases = [
            (Addr::V4([9; 4]), IPPROTO_IPIP, Flow::tcp4(C4, 5, V4, 6)),
            (Addr::V6([9; 16]), IPPROTO_IPV6, Flow::udp6(C6, 1, V6, 2)),
            (Addr::V6([9; 16]), IPPROTO_IPIP, Flow::tcp4(C4, 3, V4, 4)),
        ];
        for (outer, proto, inner) in cases {
            let l3 = ip_packet(&f, &outer, &outer, proto, &l3_packet(&f, &inner));
            let s = parse_summary(&ethernet(&f, outer.ethertype(), &l3)).unwrap();
            let want = Summary {
                dst_mac: [0; 6],
                src_mac: [0; 6],
                ..expected(&f, &inner)
            };
            assert_eq!(
                (s.proto, s.sport, s.inner),
                (proto, 0, Some(Box::new(want)))
            );
            assert!(verify_l4_checksum(&l3), "{proto} {inner:?}");
        }
    }

    #[test]
    fn icmp_arp_and_nd() {
        let frame = Frame {
            payload: b"ping".to_vec(),
            ..Frame::default()
        };
        const GW: [u8; 4] = [192, 0, 2, 254];
        const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
        let emb4 = l3_packet(&frame, &Flow::tcp4(C4, 40000, V4, 80));
        let emb6 = l3_packet(&frame, &Flow::tcp6(C6, 40000, V6, 443));
        let cases = [
            (icmp4_frag_needed(&frame, GW, C4, 1400, &emb4[..28]), [3, 4]),
            (icmp6_packet_too_big(&frame, V6, C6, 1280, &emb6), [2, 0]),
            (icmp4_echo(&frame, C4, V4), [8, 0]),
            (icmp6_echo(&frame, C6, V6), [128, 0]),
            (ipv6_neighbor_solicitation(MAC, C6, V6), [135, 0]),
        ];
        for (bytes, type_code) in &cases {
            let v4 = bytes[12..14] == ETH_P_IP.to_be_bytes();
            assert_eq!(bytes[if v4 { 34..36 } else { 54..56 }], *type_code);
            assert!(verify_l4_checksum(&bytes[14..]), "{type_code:?}");
            let mut bad = bytes.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(!verify_l4_checksum(&bad[14..]));
        }
        assert_eq!(cases[0].0[40..42], 1400u16.to_be_bytes());
        assert_eq!(cases[0].0[42..], emb4[..28]);
        let ns = &cases[4].0;
        assert_eq!((ns.len(), ns[21]), (86, 255));
        assert_eq!(ns[..6], [0x33, 0x33, 0xff, 0, 1, 0]);
        assert_eq!(
            parse_summary(ns).unwrap().dst,
            Addr::V6(0xff02_0000_0000_0000_0000_0001_ff00_0100u128.to_be_bytes())
        );
        let arp = arp_request(MAC, C4, [10, 0, 0, 2]);
        assert_eq!(
            (arp.len(), &arp[..6], &arp[12..14], arp[21]),
            (42, &[0xff; 6][..], &[8, 6][..], 1)
        );
        assert_eq!(parse_summary(&arp), None);
    }

    #[test]
    fn mutate_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rng = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = flows()
            .iter()
            .map(|f| l4_frame(&Frame::default(), f))
            .collect();
        let mut bytes = Vec::new();
        for i in 0..10_000 {
            if i % 50 == 0 {
                bytes = seeds[i / 50 % seeds.len()].clone();
            }
            mutate(&mut bytes, &mut rng);
            let _ = parse_summary(&bytes);
            let l3 = bytes.get(14..).unwrap_or_default();
            let _ = (verify_l4_checksum(l3), verify_ipv4_header_checksum(l3));
        }
    }
}
