//! Autodiff: the forward runs the inner backend's op and records a hand-written backward
//! that calls the inner backend's `sparse_attention_backward` (no decomposed graph).

use burn::backend::{
    AutodiffBackend, Backend,
    autodiff::{
        Autodiff,
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    },
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::IntDType;

use crate::SparseAttnOps;

/// What the backward pass needs from the forward.
#[derive(Clone, Debug)]
struct SavedForward<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    index: IntTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    group_size: usize,
    key_block: usize,
    scale: f64,
}

#[derive(Debug)]
struct SparseAttentionBackward;

impl<B: SparseAttnOps> Backward<B, 3> for SparseAttentionBackward {
    type State = SavedForward<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad_out = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dq, dk, dv) = B::sparse_attention_backward(
            s.q,
            s.k,
            s.v,
            s.index,
            s.out,
            s.lse,
            grad_out,
            s.group_size,
            s.key_block,
            s.scale,
        );
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: SparseAttnOps, C: CheckpointStrategy> SparseAttnOps for Autodiff<B, C> {
    fn select_critical_keys(
        q_lr: FloatTensor<Self>,
        k_lr: FloatTensor<Self>,
        group_size: usize,
        key_block: usize,
        budget: usize,
        index_dtype: IntDType,
    ) -> IntTensor<Self> {
        // Selection is discrete: no gradient flows through it.
        B::select_critical_keys(
            q_lr.into_primitive(),
            k_lr.into_primitive(),
            group_size,
            key_block,
            budget,
            index_dtype,
        )
    }

    fn sparse_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        index: IntTensor<Self>,
        group_size: usize,
        key_block: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [q.node(), k.node(), v.node()];
        let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
        let (out, lse) = B::sparse_attention_forward(
            q.clone(),
            k.clone(),
            v.clone(),
            index.clone(),
            group_size,
            key_block,
            scale,
        );
        let out = match SparseAttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = SavedForward {
                    q,
                    k,
                    v,
                    index,
                    out: out.clone(),
                    lse: lse.clone(),
                    group_size,
                    key_block,
                    scale,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        // The log-sum-exp is a by-product for callers that merge partial results; it carries
        // no gradient.
        (out, Self::from_inner(lse))
    }

    fn sparse_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        index: IntTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        group_size: usize,
        key_block: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Second-order gradients are not supported: the backward itself is not tracked.
        let (dq, dk, dv) = B::sparse_attention_backward(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            index,
            out.into_primitive(),
            lse.into_primitive(),
            grad_out.into_primitive(),
            group_size,
            key_block,
            scale,
        );
        (
            Self::from_inner(dq),
            Self::from_inner(dk),
            Self::from_inner(dv),
        )
    }
}
