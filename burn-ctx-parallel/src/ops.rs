use burn::backend::{Backend, backend_extension, tensor::FloatTensor};

/// The one backend op that makes cross-rank messages differentiable.
///
/// A collective moves tensors between ranks through the host (or a device transport), which
/// cuts the autodiff graph. [`exchange_hook`](CollectiveOps::exchange_hook) reconnects it:
/// its value is `received` (what this rank got from its peers, flattened), and under
/// Autodiff its backward sends the gradient of `received` back to the peers it came from and
/// takes, as the gradient of `sent` (what this rank sent, flattened), what the peers send
/// back — the transposed exchange. Called only by [`Communicator`](crate::Communicator).
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "fusion"),
    Autodiff,
)]
pub trait CollectiveOps: Backend {
    /// `received`, recorded under Autodiff as a function of `sent` whose backward runs the
    /// reverse exchange registered as `route`.
    #[fusion(meta = |_sent, received, _route| received.clone())]
    fn exchange_hook(
        sent: FloatTensor<Self>,
        received: FloatTensor<Self>,
        route: u64,
    ) -> FloatTensor<Self> {
        let _ = (sent, route);
        received
    }
}
