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

/// `N` bytes at `off`, loaded 4, 2 and 1 at a time: `read::<[u8; N]>` compiles to one load
/// per byte (LLVM's BPF backend assumes nothing about a packet pointer's alignment). Unaligned
/// wider loads are fine here (see [`View`]).
#[inline(always)]
pub fn read_bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let p = ptr_at::<[u8; N]>(ctx, off)? as *const u8;
    let mut out = [0u8; N];
    let mut i = 0;
    // SAFETY (all three loops): inside the window checked by ptr_at (alignment: see View).
    while i + 4 <= N {
        let b = unsafe { (p.add(i) as *const u32).read() }.to_ne_bytes();
        (out[i], out[i + 1], out[i + 2], out[i + 3]) = (b[0], b[1], b[2], b[3]);
        i += 4;
    }
    while i + 2 <= N {
        let b = unsafe { (p.add(i) as *const u16).read() }.to_ne_bytes();
        (out[i], out[i + 1]) = (b[0], b[1]);
        i += 2;
    }
    while i < N {
        out[i] = unsafe { *p.add(i) };
        i += 1;
    }
    Some(out)
}

/// Stores `bytes` at `off` 4, 2 and 1 at a time (see [`read_bytes`]).
#[inline(always)]
pub fn write_bytes<const N: usize>(ctx: &XdpContext, off: usize, bytes: [u8; N]) -> Option<()> {
    let p = ptr_at::<[u8; N]>(ctx, off)? as *mut u8;
    let b = bytes;
    let mut i = 0;
    // SAFETY (all three loops): inside the window checked by ptr_at (alignment: see View).
    while i + 4 <= N {
        let w = u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        unsafe { (p.add(i) as *mut u32).write(w) };
        i += 4;
    }
    while i + 2 <= N {
        let w = u16::from_ne_bytes([b[i], b[i + 1]]);
        unsafe { (p.add(i) as *mut u16).write(w) };
        i += 2;
    }
    while i < N {
        unsafe { *p.add(i) = b[i] };
        i += 1;
    }
    Some(())
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

    /// A 16-bit half-word in memory order.
    #[inline(always)]
    pub fn half(self, i: usize) -> u16 {
        // SAFETY: inside the window checked by `at` (see the type's note on alignment).
        unsafe { (self.0.add(i) as *const u16).read() }
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
