//! Wire constants: EtherTypes, IP protocol numbers, header lengths. The XDP program reads
//! integers from packets and compares them with these; nothing is decoded into an enum.

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// At most this many 802.1Q/802.1ad tags are parsed.
pub const MAX_VLAN_TAGS: usize = 2;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const IPV4_HLEN: usize = 20;
/// TCP header without options; the flags byte is at offset [`TCP_FLAGS_OFFSET`].
pub const TCP_HLEN: usize = 20;
pub const TCP_FLAGS_OFFSET: usize = 13;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;
/// `sk->state` of a listening socket (include/net/tcp_states.h).
pub const TCP_STATE_LISTEN: u32 = 10;
pub const IPV6_HLEN: usize = 40;
/// IPv4 flags/fragment-offset: More Fragments bit and the offset mask.
pub const IPV4_MF: u16 = 0x2000;
/// "Don't fragment" in the same word.
pub const IPV4_DF: u16 = 0x4000;
pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

/// ICMPv4 destination unreachable / fragmentation needed.
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 packet too big.
pub const ICMPV6_PKT_TOOBIG: u8 = 2;
/// ICMP header length before the embedded packet (type, code, csum, 4 bytes).
pub const ICMP_HLEN: usize = 8;

/// Address families as stored in map keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IPv6 next-header values of extension headers (RFC 8200 and the IANA list).
pub const IPV6_NEXT_HOP_BY_HOP: u8 = 0;
pub const IPV6_NEXT_ROUTING: u8 = 43;
pub const IPV6_NEXT_FRAGMENT: u8 = 44;
pub const IPV6_NEXT_ESP: u8 = 50;
pub const IPV6_NEXT_AH: u8 = 51;
pub const IPV6_NEXT_DEST_OPTS: u8 = 60;
pub const IPV6_NEXT_MOBILITY: u8 = 135;
pub const IPV6_NEXT_HIP: u8 = 139;
pub const IPV6_NEXT_SHIM6: u8 = 140;

/// XDP actions (`enum xdp_action`), as the program returns them.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// ARP: Ethernet hardware type, request opcode, and the target protocol address offset.
pub const ARP_HRD_ETHER: u16 = 1;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_TPA_OFFSET: usize = 24;
pub const ARP_HLEN: usize = 28;
/// ICMPv6 neighbour solicitation; its target address follows the 8-byte ICMP header.
pub const ICMPV6_NEIGH_SOLICIT: u8 = 135;
