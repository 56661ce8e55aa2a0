//! The inverted index: for every key unit, the query groups that selected it (counted,
//! prefix-summed, then listed in group order).

use burn_cubecl::cubecl;
use cubecl::prelude::*;

use crate::kernel::cube::tiles::row_offset;

/// Whether the ascending row of `budget` unit ids at `base` holds `unit` (binary search).
#[cube]
fn row_holds<I: Numeric>(index: &Tensor<I>, base: usize, budget: usize, unit: usize) -> bool {
    let step = index.stride(3);
    let mut lo = 0usize;
    let mut hi = budget;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if (u32::cast_from(index[base + mid * step]) as usize) < unit {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut found = false;
    if lo < budget {
        found = u32::cast_from(index[base + lo * step]) as usize == unit;
    }
    found
}

/// Per key unit: how many query groups selected it (`fill = false`), or the list of those
/// groups written from `offsets` on (`fill = true`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn invert_kernel<I: Numeric>(
    index: &Tensor<I>,
    offsets: &Tensor<I>,
    counts: &mut Tensor<I>,
    lists: &mut Tensor<I>,
    heads: u32,
    groups: u32,
    budget: u32,
    units: u32,
    #[comptime] fill: bool,
    #[define(I)] _dtype: ElemType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= (units * heads) as usize * (index.shape(0)) {
        terminate!();
    }
    let u = pos % units as usize;
    let h = (pos / units as usize) % heads as usize;
    let b = pos / (units as usize * heads as usize);
    let mut n = 0usize;
    let list_base = b * lists.stride(0) + h * lists.stride(1);
    let list_step = lists.stride(2);
    let mut first = 0usize;
    if fill {
        first = u32::cast_from(offsets[row_offset(offsets, b, h, u)]) as usize;
    }
    for g in 0..groups as usize {
        let base = row_offset(index, b, h, g);
        if row_holds::<I>(index, base, budget as usize, u) {
            if fill {
                lists[list_base + (first + n) * list_step] = I::cast_from(g as u32);
            }
            n += 1;
        }
    }
    if !fill {
        let at = b * counts.stride(0) + h * counts.stride(1) + u * counts.stride(2);
        counts[at] = I::cast_from(n as u32);
    }
}
