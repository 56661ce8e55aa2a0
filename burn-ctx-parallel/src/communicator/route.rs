//! The reverse of one exchange, kept from the forward pass until Autodiff runs it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::{DType, TensorData};
use burn_sparse_attn::SparseAttnError;

use super::Link;
use crate::CommError;
use crate::transport::Tag;

/// One piece of a flattened exchange: the peer (group rank), its element count, and
/// whether it carries a gradient (its sender's piece was tracked).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    pub peer: usize,
    pub len: usize,
    pub tracked: bool,
}

/// What the backward of one exchange needs: who sent this rank which part of its flattened
/// input, and to whom it sent which part of its flattened output.
#[derive(Debug)]
pub(crate) struct ReverseRoute {
    pub link: Link,
    pub function: &'static str,
    pub tag: Tag,
    pub sent: Vec<Piece>,
    /// Elements of the flattened sent tensor (1 for the stand-in of a rank that sent nothing).
    pub sent_len: usize,
    pub received: Vec<Piece>,
    pub dtype: DType,
}

impl ReverseRoute {
    /// Sends the gradient of every tracked received piece back to its sender and returns
    /// the gradient of the flattened sent tensor, assembled from what the receivers of its
    /// tracked pieces send back.
    pub(crate) fn run(&self, grad_received: TensorData) -> Result<TensorData, CommError> {
        let width = self.dtype.size();
        let grad = grad_received.convert_dtype(self.dtype);
        let bytes = grad.as_bytes();
        let mut at = 0;
        let mut sends = Vec::new();
        for piece in &self.received {
            if piece.tracked {
                sends.push((
                    piece.peer,
                    bytes[at * width..(at + piece.len) * width].to_vec(),
                ));
            }
            at += piece.len;
        }
        let back_bytes: usize = sends.iter().map(|(_, b)| b.len()).sum();
        let from: Vec<usize> = self
            .sent
            .iter()
            .filter(|p| p.tracked)
            .map(|p| p.peer)
            .collect();
        let replies = self
            .link
            .exchange_bytes(self.function, self.tag, sends, &from)?;
        self.link.count_backward(back_bytes, from.len());
        let mut out = vec![0u8; self.sent_len * width];
        let mut replies = replies.into_iter();
        let mut at = 0;
        for piece in &self.sent {
            if piece.tracked {
                let reply = replies.next().expect("one reply per tracked piece");
                SparseAttnError::check(
                    reply.len() == piece.len * width,
                    self.function,
                    "gradient",
                    format!("{} bytes from rank {}", piece.len * width, piece.peer),
                    reply.len(),
                )?;
                out[at * width..(at + piece.len) * width].copy_from_slice(&reply);
            }
            at += piece.len;
        }
        Ok(TensorData::from_bytes_vec(out, [self.sent_len], self.dtype))
    }
}

static NEXT_ROUTE: AtomicU64 = AtomicU64::new(0);
static ROUTES: Mutex<Option<HashMap<u64, Arc<ReverseRoute>>>> = Mutex::new(None);

/// Keeps `route` until the op that records it takes it; returns its id.
pub(crate) fn register(route: ReverseRoute) -> u64 {
    let id = NEXT_ROUTE.fetch_add(1, Ordering::Relaxed);
    ROUTES
        .lock()
        .expect("route registry")
        .get_or_insert_with(HashMap::new)
        .insert(id, Arc::new(route));
    id
}

/// The route registered as `id`, removed from the registry.
pub(crate) fn take(id: u64) -> Option<Arc<ReverseRoute>> {
    ROUTES
        .lock()
        .expect("route registry")
        .as_mut()
        .and_then(|routes| routes.remove(&id))
}
