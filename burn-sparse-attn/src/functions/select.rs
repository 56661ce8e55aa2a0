//! [`select_critical_keys`]: the critical key units of every query group.

use alloc::format;

use burn::backend::Dispatch;
use burn::config::Config;
use burn::tensor::{Int, Tensor};

use crate::{CriticalKeys, IndexShape, SparseAttnError, SparseAttnOps};

/// How [`select_critical_keys`] groups queries and keys: `SelectionConfig::new(group_size,
/// budget)` selects single keys, `.with_key_block(b)` blocks of `b` consecutive keys.
#[derive(Config, Copy, Debug, PartialEq, Eq)]
pub struct SelectionConfig {
    /// Consecutive queries that share one selection (DSV: a 3D cube of the token grid,
    /// flattened so its tokens are consecutive).
    pub group_size: usize,
    /// Keys per selected unit: 1 selects single keys (DSV), more selects key blocks.
    #[config(default = 1)]
    pub key_block: usize,
    /// Units kept per group, `1 ≤ budget ≤ ceil(key_len / key_block)`.
    pub budget: usize,
}

impl SelectionConfig {
    /// The shape of the index this selection makes for `query_len` queries and `key_len`
    /// keys.
    pub(crate) fn index_shape(&self, query_len: usize, key_len: usize) -> IndexShape {
        IndexShape {
            group_size: self.group_size,
            key_block: self.key_block,
            query_len,
            key_len,
        }
    }

    /// Checks the fields for `key_len` keys, naming `function` in the error.
    pub(crate) fn check(
        &self,
        function: &'static str,
        key_len: usize,
    ) -> Result<(), SparseAttnError> {
        SparseAttnError::check(
            self.group_size >= 1,
            function,
            "config.group_size",
            "≥ 1",
            self.group_size,
        )?;
        SparseAttnError::check(
            self.key_block >= 1,
            function,
            "config.key_block",
            "≥ 1",
            self.key_block,
        )?;
        let units = key_len.div_ceil(self.key_block);
        SparseAttnError::check(
            (1..=units).contains(&self.budget),
            function,
            "config.budget",
            format!("in 1..={units} (key units of {} keys)", self.key_block),
            self.budget,
        )
    }
}

/// Picks the critical key units of every query group from low-rank projections.
///
/// `q_lr: [B, H, Sq, r]`, `k_lr: [B, H, Sk, r]`. Each group of `config.group_size`
/// consecutive queries (the last one may be shorter) is represented by the mean of its
/// low-rank queries; it scores every key unit (the mean low-rank key of a block, or a single
/// key) and keeps the `config.budget` best, ties going to the lower id. Nothing here is
/// differentiable.
pub fn select_critical_keys(
    q_lr: Tensor<4>,
    k_lr: Tensor<4>,
    config: SelectionConfig,
) -> Result<CriticalKeys, SparseAttnError> {
    const F: &str = "select_critical_keys";
    let [b, h, sq, r] = q_lr.dims();
    let [kb, kh, sk, kr] = k_lr.dims();
    SparseAttnError::check(
        b * h * sq * r > 0,
        F,
        "q_lr",
        "a non-empty [B, H, S, r] tensor",
        format!("{:?}", q_lr.dims()),
    )?;
    SparseAttnError::check(
        (kb, kh, kr) == (b, h, r) && sk > 0,
        F,
        "k_lr",
        format!("[{b}, {h}, S_k ≥ 1, {r}] like q_lr"),
        format!("{:?}", k_lr.dims()),
    )?;
    SparseAttnError::check(
        q_lr.dtype().is_float(),
        F,
        "q_lr",
        "a float tensor",
        format!("{:?}", q_lr.dtype()),
    )?;
    SparseAttnError::check(
        k_lr.dtype() == q_lr.dtype(),
        F,
        "k_lr",
        format!("dtype {:?} like q_lr", q_lr.dtype()),
        format!("{:?}", k_lr.dtype()),
    )?;
    SparseAttnError::check(
        k_lr.device() == q_lr.device(),
        F,
        "k_lr",
        "on q_lr's device",
        "another device",
    )?;
    config.check(F, sk)?;

    let index_dtype = q_lr.device().settings().int_dtype;
    let index = <Dispatch as SparseAttnOps>::select_critical_keys(
        q_lr.dequantize().into_dispatch(),
        k_lr.dequantize().into_dispatch(),
        config,
        index_dtype,
    );
    Ok(CriticalKeys::trusted(
        Tensor::<4, Int>::from_dispatch(index),
        config.index_shape(sq, sk),
    ))
}
