//! One rank's view of a job: [`Communicator`] and its collectives, called by every rank of
//! a group with its own tensor (SPMD).
//!
//! Every collective is built on one differentiable primitive, `exchange`: send some
//! tensors to some ranks, receive some from others. Each message carries a short text that
//! states what the sender believes about the call (the collective, dtype, the dims that must
//! agree, the split); a receiver that believes otherwise returns an error naming both ranks
//! and both texts, so ranks that disagree fail by name instead of exchanging garbage. Under
//! Autodiff the exchange records its transpose as its backward (see [`crate::CollectiveOps`]).

mod collectives;
pub(crate) mod route;

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::backend::Dispatch;
use burn::tensor::{Device, Tensor};
use burn_sparse_attn::SparseAttnError;

pub use collectives::Halo;

use crate::CollectiveOps;
use crate::CommError;
use crate::transport::{Messenger, Tag, ThreadMessenger, timeout_from_env};
use route::{Piece, ReverseRoute};

/// Bytes, messages and time a rank spent on collectives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommStats {
    /// Tensor bytes sent to other ranks in forward passes (metadata included; message
    /// headers not).
    pub bytes: u64,
    /// Point-to-point messages to other ranks in forward passes.
    pub messages: u64,
    /// Gradient bytes sent back by the collectives' backward passes.
    pub backward_bytes: u64,
    /// Messages of the backward passes.
    pub backward_messages: u64,
    /// Wall seconds spent inside exchanges, forward and backward: moving bytes and waiting
    /// for peers that arrive later (so it includes load imbalance).
    pub seconds: f64,
}

/// A group's members on the messenger and the counters they share.
#[derive(Clone)]
pub(crate) struct Link {
    messenger: Arc<dyn Messenger>,
    /// Messenger rank of each group rank.
    members: Arc<Vec<usize>>,
    group: u64,
    stats: Arc<Mutex<CommStats>>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("members", &self.members)
            .field("group", &self.group)
            .finish()
    }
}

impl Link {
    /// Raw messages between group ranks, with a peer failure turned into a named error.
    fn exchange_bytes(
        &self,
        function: &'static str,
        tag: Tag,
        sends: Vec<(usize, Vec<u8>)>,
        from: &[usize],
    ) -> Result<Vec<Vec<u8>>, CommError> {
        let sends = sends
            .into_iter()
            .map(|(to, bytes)| (self.members[to], bytes))
            .collect();
        let from: Vec<usize> = from.iter().map(|&r| self.members[r]).collect();
        let start = Instant::now();
        let result = self.messenger.exchange(tag, sends, &from);
        self.stats.lock().expect("stats lock").seconds += start.elapsed().as_secs_f64();
        result.map_err(|e| CommError::Peer {
            function,
            rank: self.messenger.rank(),
            cause: e.to_string(),
        })
    }

    fn count(&self, bytes: usize, messages: usize) {
        let mut stats = self.stats.lock().expect("stats lock");
        stats.bytes += bytes as u64;
        stats.messages += messages as u64;
    }

    fn count_backward(&self, bytes: usize, messages: usize) {
        let mut stats = self.stats.lock().expect("stats lock");
        stats.backward_bytes += bytes as u64;
        stats.backward_messages += messages as u64;
    }
}

/// This rank of a group of ranks, each of which calls the same collectives in the same order
/// with its own tensors.
///
/// Made by [`run_in_process`](crate::transport::run_in_process) (ranks as threads, one per
/// device) or `run_mpi` (feature `mpi`: ranks as the processes of an MPI job). Clones are
/// handles to the same rank. Byte counters are shared with the subgroups.
#[derive(Clone)]
pub struct Communicator {
    link: Link,
    rank: usize,
    device: Device,
    seq: Arc<AtomicU64>,
    subgroups: Arc<Mutex<HashMap<Vec<usize>, Communicator>>>,
}

impl fmt::Debug for Communicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.rank)
            .field("world", &self.world())
            .field("device", &self.device)
            .finish()
    }
}

/// What an exchange delivered: the received tensors, in the order asked for, and a tie to
/// add to the caller's result when nothing was received (so that the reverse exchange of a
/// rank that only sent still runs in the backward pass).
pub(crate) struct Delivery<const D: usize> {
    pub received: Vec<Tensor<D>>,
    tie: Option<Tensor<1>>,
}

impl<const D: usize> Delivery<D> {
    /// `x` joined to the exchange's backward pass when this rank received nothing.
    pub(crate) fn tie<const E: usize>(&self, x: Tensor<E>) -> Tensor<E> {
        match &self.tie {
            Some(tie) => x + tie.clone().reshape([1; E]),
            None => x,
        }
    }
}

impl Communicator {
    /// The whole job of `messenger`, this rank computing on `device`.
    pub fn new(messenger: Arc<dyn Messenger>, device: Device) -> Self {
        let world = messenger.world();
        let rank = messenger.rank();
        let link = Link {
            messenger,
            members: Arc::new((0..world).collect()),
            group: 0,
            stats: Arc::new(Mutex::new(CommStats::default())),
        };
        Self {
            link,
            rank,
            device,
            seq: Arc::new(AtomicU64::new(0)),
            subgroups: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A group of one: this process alone on `device` (collectives return their input).
    pub fn single(device: Device) -> Self {
        let messenger = ThreadMessenger::job(1, timeout_from_env()).remove(0);
        Self::new(Arc::new(messenger), device)
    }

    /// This rank, `0..world()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the group.
    pub fn world(&self) -> usize {
        self.link.members.len()
    }

    /// The device this rank computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes and messages this rank sent so far, in this group and its subgroups.
    pub fn stats(&self) -> CommStats {
        self.link.stats.lock().expect("stats lock").clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        *self.link.stats.lock().expect("stats lock") = CommStats::default();
    }

    /// The group of `ranks` (ranks of this group, renumbered in the order given), which must
    /// include this rank; every member calls it with the same list. Made once and reused.
    pub fn subgroup(&self, ranks: &[usize]) -> Result<Communicator, CommError> {
        const F: &str = "Communicator::subgroup";
        self.check_ranks(F, "ranks", ranks)?;
        let me = ranks.iter().position(|&r| r == self.rank);
        SparseAttnError::check(
            me.is_some(),
            F,
            "ranks",
            format!("a list that holds this rank ({})", self.rank),
            format!("{ranks:?}"),
        )?;
        let mut cache = self.subgroups.lock().expect("subgroup cache");
        if let Some(sub) = cache.get(ranks) {
            return Ok(sub.clone());
        }
        let mut hasher = DefaultHasher::new();
        (self.link.group, ranks).hash(&mut hasher);
        let link = Link {
            messenger: self.link.messenger.clone(),
            members: Arc::new(ranks.iter().map(|&r| self.link.members[r]).collect()),
            group: hasher.finish(),
            stats: self.link.stats.clone(),
        };
        let sub = Communicator {
            link,
            rank: me.expect("checked"),
            device: self.device.clone(),
            seq: Arc::new(AtomicU64::new(0)),
            subgroups: Arc::new(Mutex::new(HashMap::new())),
        };
        cache.insert(ranks.to_vec(), sub.clone());
        Ok(sub)
    }

    /// This rank computing on `device` instead (same group, same message sequence).
    pub(crate) fn with_device(&self, device: Device) -> Communicator {
        Communicator {
            device,
            ..self.clone()
        }
    }

    /// A non-empty list of distinct ranks of this group, or an error naming `argument`.
    pub(crate) fn check_ranks(
        &self,
        function: &'static str,
        argument: &'static str,
        ranks: &[usize],
    ) -> Result<(), SparseAttnError> {
        let world = self.world();
        let distinct = ranks
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == ranks.len();
        SparseAttnError::check(
            !ranks.is_empty() && distinct && ranks.iter().all(|&r| r < world),
            function,
            argument,
            format!("distinct ranks below {world}"),
            format!("{ranks:?}"),
        )
    }

    /// `root` as a rank of this group, or an error naming it.
    pub(crate) fn check_root(
        &self,
        function: &'static str,
        root: usize,
    ) -> Result<(), SparseAttnError> {
        let world = self.world();
        SparseAttnError::check(
            root < world,
            function,
            "root",
            format!("a rank below {world}"),
            root,
        )
    }

    /// Every rank of the group but this one, in rank order.
    pub(crate) fn others(&self) -> Vec<usize> {
        (0..self.world()).filter(|&r| r != self.rank).collect()
    }

    fn next_tag(&self) -> Tag {
        Tag {
            group: self.link.group,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            backward: false,
        }
    }

    /// Non-differentiable metadata (index lists, shapes): `sends` to group ranks, one message
    /// from each of `from`.
    pub(crate) fn exchange_bytes(
        &self,
        function: &'static str,
        sends: Vec<(usize, Vec<u8>)>,
        from: &[usize],
    ) -> Result<Vec<Vec<u8>>, CommError> {
        let tag = self.next_tag();
        let bytes: usize = sends.iter().map(|(_, b)| b.len()).sum();
        let messages = sends.len();
        let out = self.link.exchange_bytes(function, tag, sends, from)?;
        self.link.count(bytes, messages);
        Ok(out)
    }

    /// The differentiable primitive: sends each `(rank, tensor)` (never to this rank) and
    /// receives one tensor from each rank of `from`. `agreed` states what every rank must
    /// agree on for this call; `argument` is named when they don't.
    pub(crate) fn exchange<const D: usize>(
        &self,
        function: &'static str,
        argument: &'static str,
        agreed: &str,
        sends: Vec<(usize, Tensor<D>)>,
        from: &[usize],
    ) -> Result<Delivery<D>, CommError> {
        debug_assert!(sends.iter().all(|(to, _)| *to != self.rank) && !from.contains(&self.rank));
        let agreed = format!("{agreed}; autodiff {}", self.device.is_autodiff());
        let tag = self.next_tag();
        let mut sent = Vec::with_capacity(sends.len());
        let mut messages = Vec::with_capacity(sends.len());
        let mut payload_bytes = 0;
        for (to, x) in &sends {
            let tracked = x.is_tracked();
            let data = x.clone().into_data();
            payload_bytes += data.as_bytes().len();
            sent.push(Piece {
                peer: *to,
                len: data.num_elements(),
                tracked,
            });
            messages.push((*to, wire::encode(&agreed, tracked, &data)));
        }
        let replies = self.link.exchange_bytes(function, tag, messages, from)?;
        self.link.count(payload_bytes, sends.len());
        let mut received = Vec::with_capacity(from.len());
        let mut pieces = Vec::with_capacity(from.len());
        for (reply, &peer) in replies.iter().zip(from) {
            let message = wire::decode(reply).map_err(|why| CommError::Peer {
                function,
                rank: self.rank,
                cause: format!("a malformed message from rank {peer}: {why}"),
            })?;
            if message.agreed != agreed {
                return Err(CommError::Argument(SparseAttnError {
                    function,
                    argument,
                    expected: format!("the same on every rank (rank {} has `{agreed}`)", self.rank),
                    actual: format!("`{}` on rank {peer}", message.agreed),
                }));
            }
            pieces.push(Piece {
                peer,
                len: message.data.num_elements(),
                tracked: message.tracked,
            });
            received.push(Tensor::<D>::from_data(message.data, &self.device));
        }
        let needs_backward = sent.iter().chain(&pieces).any(|p| p.tracked);
        if !needs_backward {
            return Ok(Delivery {
                received,
                tie: None,
            });
        }
        // Flatten both sides into the one tracked op whose backward is the transposed exchange.
        let dtype = sends
            .first()
            .map(|(_, x)| x.dtype())
            .or_else(|| received.first().map(Tensor::dtype))
            .expect("an exchange moves something");
        let flat = |xs: Vec<Tensor<D>>| -> Option<Tensor<1>> {
            (!xs.is_empty()).then(|| {
                Tensor::cat(
                    xs.into_iter()
                        .map(|x| {
                            let n = x.shape().num_elements();
                            x.reshape([n])
                        })
                        .collect(),
                    0,
                )
            })
        };
        // A rank that sent nothing tracked still runs the backward: it owes gradients to its
        // senders. A fresh one-element leaf stands in for its input.
        let sent_flat = if sent.iter().any(|p| p.tracked) {
            flat(sends.into_iter().map(|(_, x)| x).collect())
        } else {
            None
        }
        .unwrap_or_else(|| Tensor::<1>::zeros([1], &self.device).require_grad());
        let sent_len = sent_flat.shape().num_elements();
        let shapes: Vec<_> = received.iter().map(|x| x.shape()).collect();
        let received_flat = flat(received).unwrap_or_else(|| Tensor::<1>::zeros([1], &self.device));
        let route = route::register(ReverseRoute {
            link: self.link.clone(),
            function,
            tag: Tag {
                backward: true,
                ..tag
            },
            sent,
            sent_len,
            received: pieces,
            dtype,
        });
        let joined = Tensor::<1>::from_dispatch(<Dispatch as CollectiveOps>::exchange_hook(
            sent_flat.into_dispatch(),
            received_flat.into_dispatch(),
            route,
        ));
        if shapes.is_empty() {
            return Ok(Delivery {
                received: Vec::new(),
                tie: Some(joined),
            });
        }
        let mut at = 0;
        let received = shapes
            .into_iter()
            .map(|shape| {
                let n = shape.num_elements();
                let piece = joined.clone().narrow(0, at, n).reshape(shape);
                at += n;
                piece
            })
            .collect();
        Ok(Delivery {
            received,
            tie: None,
        })
    }
}

/// A message: what the sender agreed to, whether its tensor is tracked, the tensor.
mod wire {
    use burn::tensor::{DType, TensorData};

    pub(super) struct Message {
        pub agreed: String,
        pub tracked: bool,
        pub data: TensorData,
    }

    const DTYPES: [DType; 6] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I64,
        DType::I32,
    ];

    pub(super) fn encode(agreed: &str, tracked: bool, data: &TensorData) -> Vec<u8> {
        let dims = data.shape().to_vec();
        let code = DTYPES
            .iter()
            .position(|d| *d == data.dtype())
            .expect("a float or int dtype") as u8;
        let mut out =
            Vec::with_capacity(16 + agreed.len() + 8 * dims.len() + data.as_bytes().len());
        out.extend_from_slice(&(agreed.len() as u64).to_le_bytes());
        out.extend_from_slice(agreed.as_bytes());
        out.push(tracked as u8);
        out.push(code);
        out.push(dims.len() as u8);
        for d in dims {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(data.as_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Message, String> {
        let take = |at: usize, n: usize| {
            bytes
                .get(at..at + n)
                .ok_or_else(|| format!("truncated at byte {at}"))
        };
        let u64_at = |at: usize| {
            take(at, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        };
        let len = u64_at(0)?;
        let agreed = String::from_utf8(take(8, len)?.to_vec()).map_err(|e| e.to_string())?;
        let mut at = 8 + len;
        let head = take(at, 3)?;
        let (tracked, code, rank) = (head[0] != 0, head[1] as usize, head[2] as usize);
        at += 3;
        let dtype = *DTYPES
            .get(code)
            .ok_or_else(|| format!("dtype code {code}"))?;
        let dims = (0..rank)
            .map(|i| u64_at(at + 8 * i))
            .collect::<Result<Vec<_>, _>>()?;
        at += 8 * rank;
        let payload = bytes[at..].to_vec();
        let want = dims.iter().product::<usize>() * dtype.size();
        if payload.len() != want {
            return Err(format!(
                "{} payload bytes for {dims:?} of {dtype:?} ({want} expected)",
                payload.len()
            ));
        }
        Ok(Message {
            agreed,
            tracked,
            data: TensorData::from_bytes_vec(payload, dims, dtype),
        })
    }
}
