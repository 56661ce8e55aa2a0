//! CPU kernels on plain `f32` slices: parallel over query groups (rayon), each group's
//! selected K/V rows gathered into contiguous tiles, products through the `gemm` crate Flex
//! itself uses, a vectorised softmax, and no `[S, S]` buffer anywhere.

mod backward;
mod forward;
mod math;
mod select;

pub(crate) use backward::BackwardInputs;
pub(crate) use backward::sparse_attention_backward;
pub(crate) use forward::sparse_attention_forward;
pub(crate) use select::{SelectShape, select_critical_keys};

/// Shapes of one attention call on `[B·H, S, D]` row-major buffers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnShape {
    /// `batch · heads`.
    pub bh: usize,
    pub query_len: usize,
    pub key_len: usize,
    pub head_dim: usize,
    pub group_size: usize,
    pub key_block: usize,
    /// Units selected per group.
    pub budget: usize,
}

impl AttnShape {
    pub(crate) fn groups(&self) -> usize {
        self.query_len.div_ceil(self.group_size)
    }

    /// The selected unit ids of group `group` of head `bh`.
    pub(crate) fn units<'a>(&self, index: &'a [i64], bh: usize, group: usize) -> &'a [i64] {
        let row = bh * self.groups() + group;
        &index[row * self.budget..(row + 1) * self.budget]
    }

    /// Calls `f(first_key, len)` for each run of consecutive keys a group selected.
    pub(crate) fn for_each_key_run(&self, units: &[i64], mut f: impl FnMut(usize, usize)) {
        for &unit in units {
            let start = unit as usize * self.key_block;
            let end = (start + self.key_block).min(self.key_len);
            f(start, end - start);
        }
    }
}

/// Copies the rows a group selected from `src: [S_k, D]` into `dst`, returning how many.
fn gather_rows(shape: &AttnShape, units: &[i64], src: &[f32], dst: &mut Vec<f32>) -> usize {
    let d = shape.head_dim;
    dst.clear();
    shape.for_each_key_run(units, |start, len| {
        dst.extend_from_slice(&src[start * d..(start + len) * d]);
    });
    dst.len() / d
}
