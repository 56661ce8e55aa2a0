//! A group of ranks driven from one process (one controller holds every rank's tensors), as
//! used by clip-parallel video models; per-rank (SPMD) code uses
//! [`Communicator`](crate::Communicator) instead.
//!
//! Its collectives are written with [`Transport::send`] (a tensor to another rank's device,
//! Burn's `Tensor::to_device`) and local tensor ops, so autodiff differentiates them.

use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Tensor};

use burn_sparse_attn::SparseAttnError;

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

/// Bytes and messages sent to other ranks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommStats {
    /// Tensor bytes sent between distinct ranks in forward passes (metadata included for
    /// [`Communicator`](crate::Communicator); message headers not).
    pub bytes: u64,
    /// Point-to-point messages between distinct ranks in forward passes.
    pub messages: u64,
    /// Gradient bytes sent back by the collectives' backward passes.
    pub backward_bytes: u64,
    /// Messages of the backward passes.
    pub backward_messages: u64,
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

    /// Sum over ranks, every rank receiving the total (reduce to rank 0, then broadcast).
    pub fn all_reduce<const D: usize>(&self, parts: Vec<Tensor<D>>) -> Result<Vec<Tensor<D>>, SparseAttnError> {
        self.check_parts("DeviceGroup::all_reduce", &parts)?;
        let total = parts.into_iter().enumerate().map(|(from, p)| self.send(p, from, 0)).reduce(|a, b| a + b).expect("non-empty group");
        Ok((0..self.world).map(|to| self.send(total.clone(), 0, to)).collect())
    }
}
