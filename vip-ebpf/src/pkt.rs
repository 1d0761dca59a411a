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
