//! The collectives, each a pattern of [`Communicator::exchange`] and local tensor ops, so
//! Autodiff differentiates them with no further code.

use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use super::Communicator;
use crate::CommError;

/// What a rank receives from its two neighbours in a halo exchange: the slices before its
/// own and after them (`None` at the ends of the group and where the halo is 0).
pub type Halo<const D: usize> = (Option<Tensor<D>>, Option<Tensor<D>>);

/// `dims` with `free` dims written as `*`: the shape every rank must share.
fn pattern(dims: &[usize], free: &[usize]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if free.contains(&i) {
                "*".into()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

impl Communicator {
    fn check_dim<const D: usize>(
        function: &'static str,
        argument: &'static str,
        dim: usize,
    ) -> Result<(), SparseAttnError> {
        SparseAttnError::check(dim < D, function, argument, format!("a dim below {D}"), dim)
    }

    /// Every rank receives the concatenation of all ranks' `x` along `dim`, in rank order.
    /// Ranks may differ in size along `dim` only.
    pub fn all_gather<const D: usize>(
        &self,
        x: Tensor<D>,
        dim: usize,
    ) -> Result<Tensor<D>, CommError> {
        const F: &str = "Communicator::all_gather";
        Self::check_dim::<D>(F, "dim", dim)?;
        let agreed = format!(
            "all_gather {:?} {} along {dim}",
            x.dtype(),
            pattern(&x.dims(), &[dim])
        );
        let others = self.others();
        let sends = others.iter().map(|&r| (r, x.clone())).collect();
        let delivery = self.exchange(F, "x", &agreed, sends, &others)?;
        let mut parts = delivery.received.clone();
        parts.insert(self.rank, x);
        Ok(delivery.tie(Tensor::cat(parts, dim)))
    }

    /// All-to-all with uneven splits: this rank cuts `x` along `split_dim` into pieces of
    /// `sizes[0..world]` (each ≥ 1) and sends piece `j` to rank `j`; it returns what it
    /// receives from every rank, in rank order, concatenated along `concat_dim`. Every rank
    /// passes the same `sizes`.
    pub fn all_to_all<const D: usize>(
        &self,
        x: Tensor<D>,
        split_dim: usize,
        sizes: &[usize],
        concat_dim: usize,
    ) -> Result<Tensor<D>, CommError> {
        const F: &str = "Communicator::all_to_all";
        let world = self.world();
        Self::check_dim::<D>(F, "split_dim", split_dim)?;
        Self::check_dim::<D>(F, "concat_dim", concat_dim)?;
        SparseAttnError::check(
            sizes.len() == world && sizes.iter().all(|&s| s > 0),
            F,
            "sizes",
            format!("one size ≥ 1 per rank ({world})"),
            format!("{sizes:?}"),
        )?;
        let total: usize = sizes.iter().sum();
        SparseAttnError::check(
            x.dims()[split_dim] == total,
            F,
            "x",
            format!("size {total} along dim {split_dim} (the sum of `sizes`)"),
            x.dims()[split_dim],
        )?;
        let agreed = format!(
            "all_to_all {:?} {} split {split_dim} by {sizes:?} concat {concat_dim}",
            x.dtype(),
            pattern(&x.dims(), &[split_dim, concat_dim])
        );
        let offset = |r: usize| sizes[..r].iter().sum::<usize>();
        let piece = |r: usize| x.clone().narrow(split_dim, offset(r), sizes[r]);
        let others = self.others();
        let sends = others.iter().map(|&r| (r, piece(r))).collect();
        let delivery = self.exchange(F, "x", &agreed, sends, &others)?;
        let mut parts = delivery.received.clone();
        parts.insert(self.rank, piece(self.rank));
        Ok(delivery.tie(Tensor::cat(parts, concat_dim)))
    }

    /// Sum over ranks; every rank receives the total, with the same bits (each slice is
    /// summed once, in rank order, by its owner: a reduce-scatter then an all-gather, moving
    /// `2·(world − 1)/world` of `x` per rank).
    pub fn all_reduce<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, CommError> {
        const F: &str = "Communicator::all_reduce";
        let world = self.world();
        if world == 1 {
            return Ok(x);
        }
        let shape = x.shape();
        let n = shape.num_elements();
        let agreed = format!("all_reduce {:?} {:?}", x.dtype(), x.dims());
        let flat = x.reshape([n]);
        let bounds: Vec<usize> = (0..=world).map(|r| r * n / world).collect();
        let slice =
            |t: &Tensor<1>, r: usize| t.clone().narrow(0, bounds[r], bounds[r + 1] - bounds[r]);
        // Ranks that own a non-empty slice (all of them unless x has fewer elements than ranks).
        let owners: Vec<usize> = (0..world)
            .filter(|&r| r != self.rank && bounds[r + 1] > bounds[r])
            .collect();
        let everyone = self.others();
        let mine = bounds[self.rank + 1] > bounds[self.rank];
        // Reduce-scatter: slice r summed on rank r, in rank order.
        let sends = owners.iter().map(|&r| (r, slice(&flat, r))).collect();
        let from: Vec<usize> = if mine { everyone.clone() } else { Vec::new() };
        let scattered = self.exchange(F, "x", &agreed, sends, &from)?;
        let own = mine.then(|| {
            let mut parts = scattered.received.clone();
            parts.insert(self.rank, slice(&flat, self.rank));
            scattered.tie(parts.into_iter().reduce(|a, b| a + b).expect("non-empty"))
        });
        // All-gather of the summed slices.
        let sends = own
            .iter()
            .flat_map(|s| everyone.iter().map(move |&r| (r, s.clone())))
            .collect();
        let gathered = self.exchange(F, "x", &agreed, sends, &owners)?;
        let mut parts = gathered.received.clone();
        if let Some(own) = own {
            parts.insert(owners.iter().filter(|&&r| r < self.rank).count(), own);
        }
        Ok(scattered
            .tie(gathered.tie(Tensor::cat(parts, 0)))
            .reshape(shape))
    }

    /// Sum over ranks, this rank keeping the `rank`-th of `world` equal slices along `dim`.
    pub fn reduce_scatter<const D: usize>(
        &self,
        x: Tensor<D>,
        dim: usize,
    ) -> Result<Tensor<D>, CommError> {
        const F: &str = "Communicator::reduce_scatter";
        let world = self.world();
        Self::check_dim::<D>(F, "dim", dim)?;
        let n = x.dims()[dim];
        SparseAttnError::check(
            n.is_multiple_of(world),
            F,
            "x",
            format!("a size along dim {dim} divisible by {world}"),
            n,
        )?;
        let chunk = n / world;
        let agreed = format!("reduce_scatter {:?} {:?} along {dim}", x.dtype(), x.dims());
        let others = self.others();
        let sends = others
            .iter()
            .map(|&r| (r, x.clone().narrow(dim, r * chunk, chunk)))
            .collect();
        let delivery = self.exchange(F, "x", &agreed, sends, &others)?;
        let mut parts = delivery.received.clone();
        parts.insert(self.rank, x.narrow(dim, self.rank * chunk, chunk));
        Ok(delivery.tie(parts.into_iter().reduce(|a, b| a + b).expect("world ≥ 1")))
    }

    /// Halo exchange along `dim`: this rank receives the last `halo` slices of rank
    /// `rank − 1` and the first `halo` slices of rank `rank + 1`. Ranks may differ in size
    /// along `dim` only, and each must hold at least `halo` slices.
    pub fn halo_exchange<const D: usize>(
        &self,
        x: Tensor<D>,
        dim: usize,
        halo: usize,
    ) -> Result<Halo<D>, CommError> {
        const F: &str = "Communicator::halo_exchange";
        Self::check_dim::<D>(F, "dim", dim)?;
        let len = x.dims()[dim];
        SparseAttnError::check(
            len >= halo,
            F,
            "halo",
            format!("≤ this rank's size along dim {dim} ({len})"),
            halo,
        )?;
        if halo == 0 || self.world() == 1 {
            return Ok((None, None));
        }
        let agreed = format!(
            "halo_exchange {:?} {} along {dim} halo {halo}",
            x.dtype(),
            pattern(&x.dims(), &[dim])
        );
        let (r, last) = (self.rank, self.world() - 1);
        let mut sends = Vec::new();
        if r > 0 {
            sends.push((r - 1, x.clone().narrow(dim, 0, halo)));
        }
        if r < last {
            sends.push((r + 1, x.narrow(dim, len - halo, halo)));
        }
        let from: Vec<usize> = [(r > 0).then(|| r - 1), (r < last).then_some(r + 1)]
            .into_iter()
            .flatten()
            .collect();
        let delivery = self.exchange(F, "x", &agreed, sends, &from)?;
        let mut received = delivery.received.into_iter();
        let before = (r > 0).then(|| received.next().expect("from the left"));
        let after = (r < last).then(|| received.next().expect("from the right"));
        Ok((before, after))
    }

    /// Sends `x` to rank `to` and returns what rank `from` sends this rank (one ring step
    /// when `to = rank + 1` and `from = rank − 1`, mod world). Ranks may differ in size
    /// along `free_dim` only.
    pub fn send_recv<const D: usize>(
        &self,
        x: Tensor<D>,
        to: usize,
        from: usize,
        free_dim: usize,
    ) -> Result<Tensor<D>, CommError> {
        const F: &str = "Communicator::send_recv";
        let world = self.world();
        SparseAttnError::check(
            to < world && from < world,
            F,
            "to",
            format!("ranks below {world}"),
            format!("to {to}, from {from}"),
        )?;
        if to == self.rank && from == self.rank {
            return Ok(x);
        }
        let agreed = format!(
            "send_recv {:?} {}",
            x.dtype(),
            pattern(&x.dims(), &[free_dim])
        );
        let delivery = self.exchange(F, "x", &agreed, vec![(to, x)], &[from])?;
        Ok(delivery.received.into_iter().next().expect("one message"))
    }

    /// Every rank receives the concatenation along `dim` of the tensors of `senders` (in the
    /// order listed): each rank of `senders` passes `Some`, every other rank `None` (an
    /// all-gather in which only some ranks contribute). Senders may differ in size along
    /// `dim` only.
    pub fn gather_from<const D: usize>(
        &self,
        x: Option<Tensor<D>>,
        senders: &[usize],
        dim: usize,
    ) -> Result<Tensor<D>, CommError> {
        const F: &str = "Communicator::gather_from";
        Self::check_dim::<D>(F, "dim", dim)?;
        self.check_ranks(F, "senders", senders)?;
        let sending = senders.contains(&self.rank);
        SparseAttnError::check(
            sending == x.is_some(),
            F,
            "x",
            format!(
                "{} on rank {} ({}in `senders`)",
                if sending { "Some" } else { "None" },
                self.rank,
                if sending { "" } else { "not " }
            ),
            if x.is_some() { "Some" } else { "None" },
        )?;
        let from: Vec<usize> = senders
            .iter()
            .copied()
            .filter(|&r| r != self.rank)
            .collect();
        let sends = match &x {
            Some(x) => self.others().into_iter().map(|r| (r, x.clone())).collect(),
            None => Vec::new(),
        };
        // Only the call itself can be agreed up front: a receiver learns the dtype and fixed
        // dims from the senders, and checks that they agree below.
        let agreed = format!("gather_from {senders:?} along {dim}");
        let delivery = self.exchange(F, "senders", &agreed, sends, &from)?;
        let mut received = delivery.received.clone().into_iter();
        let parts: Vec<Tensor<D>> = senders
            .iter()
            .map(|&r| match (&x, r == self.rank) {
                (Some(x), true) => x.clone(),
                _ => received.next().expect("one message per other sender"),
            })
            .collect();
        let first = &parts[0];
        let want = pattern(&first.dims(), &[dim]);
        for (part, &r) in parts.iter().zip(senders) {
            SparseAttnError::check(
                part.dtype() == first.dtype() && pattern(&part.dims(), &[dim]) == want,
                F,
                "x",
                format!(
                    "{:?} {want} on every sender (rank {})",
                    first.dtype(),
                    senders[0]
                ),
                format!("{:?} {:?} on rank {r}", part.dtype(), part.dims()),
            )?;
        }
        Ok(delivery.tie(Tensor::cat(parts, dim)))
    }

    /// `x` of rank `root` on every rank; the other ranks' `x` gives only the shape and dtype
    /// every rank must share.
    pub fn broadcast<const D: usize>(
        &self,
        x: Tensor<D>,
        root: usize,
    ) -> Result<Tensor<D>, CommError> {
        const F: &str = "Communicator::broadcast";
        let world = self.world();
        self.check_root(F, root)?;
        if world == 1 {
            return Ok(x);
        }
        let agreed = format!("broadcast from {root} {:?} {:?}", x.dtype(), x.dims());
        if self.rank == root {
            let sends = self.others().into_iter().map(|r| (r, x.clone())).collect();
            let delivery = self.exchange(F, "x", &agreed, sends, &[])?;
            Ok(delivery.tie(x))
        } else {
            let delivery = self.exchange(F, "x", &agreed, Vec::new(), &[root])?;
            Ok(delivery.received.into_iter().next().expect("one message"))
        }
    }

    /// The concatenation along `dim` of every rank's `x`, in rank order, on rank `root`
    /// (`None` elsewhere), for results to write out: not differentiable (`x` is detached).
    /// Ranks may differ in size along `dim` only.
    pub fn gather_to<const D: usize>(
        &self,
        x: Tensor<D>,
        root: usize,
        dim: usize,
    ) -> Result<Option<Tensor<D>>, CommError> {
        const F: &str = "Communicator::gather_to";
        Self::check_dim::<D>(F, "dim", dim)?;
        self.check_root(F, root)?;
        let agreed = format!(
            "gather_to {root} {:?} {} along {dim}",
            x.dtype(),
            pattern(&x.dims(), &[dim])
        );
        let x = x.detach();
        if self.rank != root {
            self.exchange(F, "x", &agreed, vec![(root, x)], &[])?;
            return Ok(None);
        }
        let others = self.others();
        let delivery = self.exchange(F, "x", &agreed, Vec::new(), &others)?;
        let mut parts = delivery.received;
        parts.insert(self.rank, x);
        Ok(Some(Tensor::cat(parts, dim)))
    }
}

impl Communicator {
    /// Every rank's `bytes`, in rank order (metadata: configurations, shard lengths).
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        const F: &str = "Communicator::all_gather_bytes";
        let others = self.others();
        let sends = others.iter().map(|&r| (r, bytes.to_vec())).collect();
        let mut out = self.exchange_bytes(F, sends, &others)?;
        out.insert(self.rank, bytes.to_vec());
        Ok(out)
    }

    /// Every rank's `value`, in rank order (metadata: shard lengths and the like).
    pub fn gather_sizes(&self, value: usize) -> Result<Vec<usize>, CommError> {
        const F: &str = "Communicator::gather_sizes";
        let replies = self.all_gather_bytes(&(value as u64).to_le_bytes())?;
        replies
            .iter()
            .enumerate()
            .map(|(peer, reply)| {
                let bytes: [u8; 8] = reply.as_slice().try_into().map_err(|_| CommError::Peer {
                    function: F,
                    rank: self.rank(),
                    cause: format!("{} bytes from rank {peer} where 8 were due", reply.len()),
                })?;
                Ok(u64::from_le_bytes(bytes) as usize)
            })
            .collect()
    }
}
