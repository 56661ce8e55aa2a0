//! Autodiff: the exchange's backward is the transposed exchange, run by the route the
//! forward registered.

use std::sync::Arc;

use burn::backend::{
    TensorMetadata,
    autodiff::{
        Autodiff,
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    },
    tensor::FloatTensor,
};
use burn::tensor::read_sync;

use crate::CollectiveOps;
use crate::communicator::route::{self, ReverseRoute};

#[derive(Debug)]
struct ExchangeBackward;

impl<B: CollectiveOps> Backward<B, 1> for ExchangeBackward {
    type State = Arc<ReverseRoute>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_sent] = ops.parents;
        let grad_received = grads.consume::<B>(&ops.node);
        let device = grad_received.device();
        let data = read_sync(B::float_into_data(grad_received))
            .unwrap_or_else(|e| panic!("reading a collective's gradient: {e:?}"));
        // Every rank runs its reverse exchange, whether or not its own input needs a gradient:
        // its peers wait for the gradients it owes them.
        let grad_sent = ops.state.run(data).unwrap_or_else(|e| panic!("{e}"));
        if let Some(node) = node_sent {
            grads.register::<B>(node.id, B::float_from_data(grad_sent, &device));
        }
    }
}

impl<B: CollectiveOps, C: CheckpointStrategy> CollectiveOps for Autodiff<B, C> {
    fn exchange_hook(
        sent: FloatTensor<Self>,
        received: FloatTensor<Self>,
        route_id: u64,
    ) -> FloatTensor<Self> {
        let nodes = [sent.node()];
        let received = received.into_primitive();
        let route = route::take(route_id)
            .expect("exchange_hook: every route is registered once by Communicator::exchange");
        // Compute-bound: a checkpointing strategy must never replay a message.
        match ExchangeBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(route, received),
            OpsKind::UnTracked(prep) => prep.finish(received),
        }
    }
}
