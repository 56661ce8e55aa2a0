use burn::backend::{
    Backend, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::IntDType;

use crate::{AttnInputs, SelectionConfig, reference};

/// The sparse attention operations every backend provides.
///
/// The default bodies are the reference maths written with Burn tensor primitives: they serve
/// the CPU backends that have no native kernel and are the oracle every kernel is tested
/// against. Call these through the validated functions of this crate
/// ([`select_critical_keys`](crate::select_critical_keys), [`sparse_attention`](crate::sparse_attention)),
/// never directly: the ops trust their arguments.
///
/// Conventions shared by all three ops, for `S` tokens split into `G = ceil(S / group_size)`
/// query groups:
/// - `index: [B, H, G, k]` holds, for each query group, the ids of its critical key *units*
///   in ascending order: single keys when `key_block == 1`, else blocks of `key_block`
///   consecutive keys (block `j` covers keys `j·key_block .. min((j+1)·key_block, S)`).
/// - Every query of a group attends to the keys of its group's units and nothing else.

#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "fusion"),
    Autodiff,
)]
pub trait SparseAttnOps: Backend {
    /// Scores every key unit against each query group's proxy (the mean of the group's low-rank
    /// queries) and returns the `selection.budget` best units per group, sorted by id.
    ///
    /// `q_lr, k_lr: [B, H, S, r]` → `[B, H, G, budget]` of `index_dtype`. A unit's score is the
    /// proxy's dot product with the mean low-rank key of the unit; ties go to the lower id.
    #[fusion(meta = |q_lr, _k_lr, selection, index_dtype| {
        crate::ops::fusion_meta::index(q_lr, selection, *index_dtype)
    })]
    fn select_critical_keys(
        q_lr: FloatTensor<Self>,
        k_lr: FloatTensor<Self>,
        selection: SelectionConfig,
        index_dtype: IntDType,
    ) -> IntTensor<Self> {
        reference::select_critical_keys::<Self>(q_lr, k_lr, selection, index_dtype)
    }

    /// Sparse attention forward → the output `[B, H, S, D]` (dtype of `q`) and the per-row
    /// log-sum-exp of the scaled scores `[B, H, S]` (always f32), which the backward reuses.
    #[fusion(meta = |inputs| crate::ops::fusion_meta::forward(&inputs.q))]
    fn sparse_attention_forward(
        #[extension_type] inputs: AttnInputs<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference::sparse_attention_forward::<Self>(inputs)
    }

    /// Sparse attention backward: the forward's inputs, its output and log-sum-exp, and the
    /// output gradient `grad_out: [B, H, S, D]` → `(dq, dk, dv)`, each shaped and typed like
    /// its input.
    #[fusion(meta = |inputs, _out, _lse, _grad_out| {
        (inputs.q.clone(), inputs.k.clone(), inputs.v.clone())
    })]
    fn sparse_attention_backward(
        #[extension_type] inputs: AttnInputs<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference::sparse_attention_backward::<Self>(inputs, out, lse, grad_out)
    }
}

/// Output metadata for the lazy (Fusion) versions of the ops.
#[cfg(feature = "fusion")]
pub(crate) mod fusion_meta {
    use burn::backend::fusion::custom::TensorSpec;
    use burn::tensor::{DType, IntDType, Shape};

    use crate::SelectionConfig;

    pub(crate) fn index(
        q_lr: &TensorSpec,
        selection: &SelectionConfig,
        index_dtype: IntDType,
    ) -> TensorSpec {
        let dims = &q_lr.shape;
        let groups = dims[2].div_ceil(selection.group_size);
        TensorSpec::new(
            Shape::new([dims[0], dims[1], groups, selection.budget]),
            DType::from(index_dtype),
        )
    }

    pub(crate) fn forward(q: &TensorSpec) -> (TensorSpec, TensorSpec) {
        let dims = &q.shape;
        let lse = TensorSpec::new(Shape::new([dims[0], dims[1], dims[2]]), DType::F32);
        (q.clone(), lse)
    }
}
