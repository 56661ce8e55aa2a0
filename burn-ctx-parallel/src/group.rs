//! A group of ranks driven from one process, and the collectives over it.
//!
//! Every collective is written with two primitives: [`Transport::send`] (a tensor to another
//! rank's device) and local tensor ops (slice, cat, add). With Burn's `Tensor::to_device` as
//! the transport, that is NCCL send/recv between CUDA devices inside CubeCL and a plain move
//! (or nothing, for ranks sharing a CPU device) elsewhere; both are differentiable, so the
//! collectives are too.
//!
//! ## Adding a multi-process transport
//! Implement [`Transport`] over a communicator (NCCL through cudarc's `Comm`, or MPI): `send`
//! becomes a matched send/recv pair between the two processes and `rank_device` the local
//! device. Only the driver changes — each process then holds one rank's tensors and runs the
//! same collective code, with the loops over ranks reduced to its own; the parallel attention
//! above calls collectives only and needs no change.

use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Tensor};

use burn_sparse_attn::SparseAttnError;

use crate::clips::{ClipLayout, Halo, clip_halos};

/// Moves tensors between ranks.
pub trait Transport: Send + Sync {
    /// The device rank `rank` computes on.
    fn rank_device(&self, rank: usize) -> Device;
    /// Delivers `tensor` from rank `from` to rank `to`.
    fn send<const D: usize>(&self, tensor: Tensor<D>, from: usize, to: usize) -> Tensor<D>;
}

/// `Tensor::to_device` between the devices of one process (NCCL between CUDA devices).
#[derive(Clone, Debug)]
pub struct DeviceTransport {
    devices: Vec<Device>,
}

impl Transport for DeviceTransport {
    fn rank_device(&self, rank: usize) -> Device {
        self.devices[rank].clone()
    }

    fn send<const D: usize>(&self, tensor: Tensor<D>, _from: usize, to: usize) -> Tensor<D> {
        let target = &self.devices[to];
        if &tensor.device() == target { tensor } else { tensor.to_device(target) }
    }
}

/// The ranks `ranks` of a parent transport, renumbered `0..ranks.len()`.
#[derive(Clone, Debug)]
pub struct SubTransport<T> {
    parent: T,
    ranks: Vec<usize>,
}

impl<T: Transport> Transport for SubTransport<T> {
    fn rank_device(&self, rank: usize) -> Device {
        self.parent.rank_device(self.ranks[rank])
    }

    fn send<const D: usize>(&self, tensor: Tensor<D>, from: usize, to: usize) -> Tensor<D> {
        self.parent.send(tensor, self.ranks[from], self.ranks[to])
    }
}

/// Bytes and messages moved between distinct ranks, by collective.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommStats {
    /// Bytes sent between distinct ranks.
    pub bytes: u64,
    /// Point-to-point messages between distinct ranks.
    pub messages: u64,
}

/// Ranks `0..world` over a transport, with byte counters.
#[derive(Clone)]
pub struct DeviceGroup<T: Transport = DeviceTransport> {
    transport: T,
    world: usize,
    stats: Arc<Mutex<CommStats>>,
}

impl DeviceGroup<DeviceTransport> {
    /// One rank per device; the same device may appear several times (virtual ranks).
    pub fn new(devices: Vec<Device>) -> Result<Self, SparseAttnError> {
        SparseAttnError::check(!devices.is_empty(), "DeviceGroup::new", "devices", "at least one device", "none")?;
        let world = devices.len();
        Ok(Self::with_transport(DeviceTransport { devices }, world))
    }

    /// `world` virtual ranks on one device (how the tests and CPU users run).
    pub fn virtual_ranks(device: &Device, world: usize) -> Result<Self, SparseAttnError> {
        Self::new(vec![device.clone(); world])
    }
}

impl<T: Transport> DeviceGroup<T> {
    /// A group over your own transport.
    pub fn with_transport(transport: T, world: usize) -> Self {
        Self { transport, world, stats: Arc::new(Mutex::new(CommStats::default())) }
    }

    /// A group of some of this group's ranks (renumbered in the order given) whose traffic
    /// counts in this group's statistics too: the head and sequence groups of a hybrid split.
    pub fn subgroup(&self, ranks: Vec<usize>) -> Result<DeviceGroup<SubTransport<T>>, SparseAttnError>
    where
        T: Clone,
    {
        let distinct = ranks.iter().collect::<std::collections::BTreeSet<_>>().len() == ranks.len();
        SparseAttnError::check(!ranks.is_empty() && distinct && ranks.iter().all(|&r| r < self.world), "DeviceGroup::subgroup", "ranks", format!("distinct ranks below {}", self.world), format!("{ranks:?}"))?;
        let world = ranks.len();
        Ok(DeviceGroup { transport: SubTransport { parent: self.transport.clone(), ranks }, world, stats: self.stats.clone() })
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The device of `rank`.
    pub fn device(&self, rank: usize) -> Device {
        self.transport.rank_device(rank)
    }

    /// Bytes and messages so far.
    pub fn stats(&self) -> CommStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        *self.stats.lock().expect("stats lock") = CommStats::default();
    }

    fn check_parts<const D: usize>(&self, function: &'static str, parts: &[Tensor<D>]) -> Result<(), SparseAttnError> {
        SparseAttnError::check(parts.len() == self.world, function, "parts", format!("one tensor per rank ({})", self.world), parts.len())
    }

    /// Point-to-point: `tensor` from `from` to `to`, counted when the ranks differ.
    pub fn send<const D: usize>(&self, tensor: Tensor<D>, from: usize, to: usize) -> Tensor<D> {
        if from != to {
            let bytes = tensor.shape().num_elements() as u64 * tensor.dtype().size() as u64;
            let mut stats = self.stats.lock().expect("stats lock");
            stats.bytes += bytes;
            stats.messages += 1;
        }
        self.transport.send(tensor, from, to)
    }

    /// Every rank receives the concatenation of all ranks' parts along `dim`.
    pub fn all_gather<const D: usize>(&self, parts: Vec<Tensor<D>>, dim: usize) -> Result<Vec<Tensor<D>>, SparseAttnError> {
        self.check_parts("DeviceGroup::all_gather", &parts)?;
        Ok((0..self.world)
            .map(|to| Tensor::cat(parts.iter().enumerate().map(|(from, p)| self.send(p.clone(), from, to)).collect(), dim))
            .collect())
    }

    /// All-to-all with uneven splits: rank `r` cuts its part along `split_dim` into pieces of
    /// `sizes[0..world]` and sends piece `j` to rank `j`; each rank concatenates what it
    /// receives, in rank order, along `concat_dim`.
    pub fn all_to_all<const D: usize>(&self, parts: Vec<Tensor<D>>, split_dim: usize, sizes: &[usize], concat_dim: usize) -> Result<Vec<Tensor<D>>, SparseAttnError> {
        const F: &str = "DeviceGroup::all_to_all";
        self.check_parts(F, &parts)?;
        SparseAttnError::check(sizes.len() == self.world, F, "sizes", format!("one size per rank ({})", self.world), sizes.len())?;
        let total: usize = sizes.iter().sum();
        for p in &parts {
            SparseAttnError::check(p.dims()[split_dim] == total, F, "parts", format!("size {total} along dim {split_dim} (the sum of `sizes`)"), p.dims()[split_dim])?;
        }
        let offsets: Vec<usize> = sizes.iter().scan(0, |acc, &s| { let o = *acc; *acc += s; Some(o) }).collect();
        Ok((0..self.world)
            .map(|to| {
                let pieces = parts.iter().enumerate().filter(|_| sizes[to] > 0).map(|(from, p)| self.send(p.clone().narrow(split_dim, offsets[to], sizes[to]), from, to)).collect::<Vec<_>>();
                Tensor::cat(pieces, concat_dim)
            })
            .collect())
    }

    /// Sum over ranks, every rank receiving the total (reduce to rank 0, then broadcast).
    pub fn all_reduce<const D: usize>(&self, parts: Vec<Tensor<D>>) -> Result<Vec<Tensor<D>>, SparseAttnError> {
        self.check_parts("DeviceGroup::all_reduce", &parts)?;
        let total = parts.into_iter().enumerate().map(|(from, p)| self.send(p, from, 0)).reduce(|a, b| a + b).expect("non-empty group");
        Ok((0..self.world).map(|to| self.send(total.clone(), 0, to)).collect())
    }

    /// Sum over ranks, rank `r` keeping the `r`-th of `world` equal slices along `dim`.
    pub fn reduce_scatter<const D: usize>(&self, parts: Vec<Tensor<D>>, dim: usize) -> Result<Vec<Tensor<D>>, SparseAttnError> {
        const F: &str = "DeviceGroup::reduce_scatter";
        self.check_parts(F, &parts)?;
        let n = parts[0].dims()[dim];
        SparseAttnError::check(n % self.world == 0, F, "parts", format!("a size along dim {dim} divisible by {}", self.world), n)?;
        let chunk = n / self.world;
        Ok((0..self.world)
            .map(|to| parts.iter().enumerate().map(|(from, p)| self.send(p.clone().narrow(dim, to * chunk, chunk), from, to)).reduce(|a, b| a + b).expect("non-empty group"))
            .collect())
    }

    /// Halo exchange along `dim`: rank `r` receives the last `halo` slices of rank `r − 1`
    /// (`None` on rank 0) and the first `halo` slices of rank `r + 1` (`None` on the last).
    pub fn halo_exchange<const D: usize>(&self, parts: &[Tensor<D>], dim: usize, halo: usize) -> Result<Vec<Halo<D>>, SparseAttnError> {
        const F: &str = "DeviceGroup::halo_exchange";
        self.check_parts(F, parts)?;
        SparseAttnError::check(dim < D, F, "dim", format!("< {D}"), dim)?;
        for p in parts {
            SparseAttnError::check(p.dims()[dim] >= halo, F, "halo", format!("≤ every part's size along dim {dim}"), halo)?;
        }
        // One clip per rank.
        let layout = ClipLayout::new(parts.iter().map(|p| p.dims()[dim].max(1)).collect(), self.world)?;
        clip_halos(self, &layout, parts, dim, halo)
    }
}
