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

use crate::{AttnInputs, SelectionConfig, SparseAttnOps};

/// What the backward pass needs from the forward.
#[derive(Clone, Debug)]
struct SavedForward<B: Backend> {
    inputs: AttnInputs<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
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
        let saved = ops.state;
        let (dq, dk, dv) =
            B::sparse_attention_backward(saved.inputs, saved.out, saved.lse, grad_out);
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The inner backend's view of autodiff inputs (the index carries no gradient).
fn inner<B: Backend, C: CheckpointStrategy>(inputs: AttnInputs<Autodiff<B, C>>) -> AttnInputs<B> {
    AttnInputs {
        q: inputs.q.into_primitive(),
        k: inputs.k.into_primitive(),
        v: inputs.v.into_primitive(),
        index: inputs.index,
        layout: inputs.layout,
    }
}

impl<B: SparseAttnOps, C: CheckpointStrategy> SparseAttnOps for Autodiff<B, C> {
    fn select_critical_keys(
        q_lr: FloatTensor<Self>,
        k_lr: FloatTensor<Self>,
        selection: SelectionConfig,
        index_dtype: IntDType,
    ) -> IntTensor<Self> {
        // Selection is discrete: no gradient flows through it.
        B::select_critical_keys(
            q_lr.into_primitive(),
            k_lr.into_primitive(),
            selection,
            index_dtype,
        )
    }

    fn sparse_attention_forward(
        inputs: AttnInputs<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [inputs.q.node(), inputs.k.node(), inputs.v.node()];
        let inputs = inner(inputs);
        let (out, lse) = B::sparse_attention_forward(inputs.clone());
        let out = match SparseAttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = SavedForward {
                    inputs,
                    out: out.clone(),
                    lse: lse.clone(),
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
        inputs: AttnInputs<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Second-order gradients are not supported: the backward itself is not tracked.
        let (dq, dk, dv) = B::sparse_attention_backward(
            inner(inputs),
            out.into_primitive(),
            lse.into_primitive(),
            grad_out.into_primitive(),
        );
        (
            Self::from_inner(dq),
            Self::from_inner(dk),
            Self::from_inner(dv),
        )
    }
}
