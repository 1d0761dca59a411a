//! Bounds-checked packet access. Every read checks against `data_end`, so the verifier can
//! prove it; offsets are bounded integers.
use aya_ebpf::programs::XdpContext;

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    // SAFETY: ptr_at checked the bounds; packet data may be unaligned.
    ptr_at::<T>(ctx, off).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
pub fn u8_at(ctx: &XdpContext, off: usize) -> Option<u8> {
    read::<u8>(ctx, off)
}

#[inline(always)]
pub fn be16_at(ctx: &XdpContext, off: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, off).map(u16::from_be_bytes)
}

#[inline(always)]
pub fn write<T>(ctx: &XdpContext, off: usize, value: T) -> Option<()> {
    // SAFETY: ptr_at checked the bounds; packet data may be unaligned.
    ptr_at::<T>(ctx, off).map(|p| unsafe { core::ptr::write_unaligned(p, value) })
}

/// A bounds-checked window of `N` bytes at an offset; fields are read with single loads.
/// BPF allows unaligned packet loads here (the verifier enforces alignment only under
/// BPF_F_STRICT_ALIGNMENT, and x86 loads are unaligned-safe); byte-wise loads of 16-byte
/// addresses were the bulk of the parse cost. Indices must stay below `N`.
#[derive(Clone, Copy)]
pub struct View(*const u8);

impl View {
    #[inline(always)]
    pub fn at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<Self> {
        ptr_at::<[u8; N]>(ctx, off).map(|p| Self(p as *const u8))
    }

    #[inline(always)]
    pub fn u8(self, i: usize) -> u8 {
        // SAFETY: inside the window checked by `at`.
        unsafe { *self.0.add(i) }
    }

    #[inline(always)]
    pub fn be16(self, i: usize) -> u16 {
        // SAFETY: inside the window checked by `at` (see the type's note on alignment).
        u16::from_be(unsafe { (self.0.add(i) as *const u16).read() })
    }

    /// A 32-bit word in memory order (what `vip_common::flow::addr_words` computes).
    #[inline(always)]
    pub fn word(self, i: usize) -> u32 {
        // SAFETY: inside the window checked by `at` (see the type's note on alignment).
        unsafe { (self.0.add(i) as *const u32).read() }
    }

    /// Four words: an IPv6 address, or an IPv4 one padded with zeros when `v4`.
    #[inline(always)]
    pub fn addr(self, i: usize, v4: bool) -> [u32; 4] {
        if v4 {
            [self.word(i), 0, 0, 0]
        } else {
            [
                self.word(i),
                self.word(i + 4),
                self.word(i + 8),
                self.word(i + 12),
            ]
        }
    }
}
