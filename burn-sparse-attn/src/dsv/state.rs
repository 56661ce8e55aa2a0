//! A saved vector of statistics that lives on the host.

use alloc::vec::Vec;

use burn::module::{
    Content, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param,
    ParamId,
};
use burn::tensor::{Device, Tensor, TensorData};

/// Saved, non-trained layer state (a schedule, smoothed statistics) kept as host values.
///
/// Visitors, mappers and checkpoints see it as a tensor parameter without gradient, so it
/// saves, loads and is copied by EMA like Burn's `RunningState`. Unlike `RunningState` it is a
/// plain value: a clone (a replica, an EMA copy, a `.valid()` copy) owns its own values, and
/// reading them never waits on the device.
#[derive(Clone, Debug)]
pub struct HostState {
    id: ParamId,
    values: Vec<f32>,
    device: Device,
}

impl HostState {
    /// State holding `values`, presented as a tensor on `device`.
    pub fn new(values: Vec<f32>, device: &Device) -> Self {
        Self {
            id: ParamId::new(),
            values,
            device: device.clone(),
        }
    }

    /// The values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Replaces the values (same length).
    pub fn set(&mut self, values: Vec<f32>) {
        debug_assert_eq!(values.len(), self.values.len(), "HostState length");
        self.values = values;
    }

    /// The parameter id under which it is saved; stable across clones.
    pub fn id(&self) -> ParamId {
        self.id
    }

    /// The values as a tensor on the state's device.
    pub fn tensor(&self) -> Tensor<1> {
        let n = self.values.len();
        Tensor::from_data(TensorData::new(self.values.clone(), [n]), &self.device)
    }
}

impl Module for HostState {
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        visitor.visit_float(&Param::initialized(self.id, self.tensor()));
    }

    fn map<M: ModuleMapper>(mut self, mapper: &mut M) -> Self {
        let (_, tensor, _) = mapper
            .map_float(Param::initialized(self.id, self.tensor()))
            .consume();
        // A load or a device move: one read-back, not one per forward.
        self.device = tensor.device();
        self.values = to_host(tensor);
        self
    }

    fn to_device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    fn fork(self, device: &Device) -> Self {
        self.to_device(device)
    }

    fn collect_devices(&self, mut devices: Vec<Device>) -> Vec<Device> {
        if !devices.contains(&self.device) {
            devices.push(self.device.clone());
        }
        devices
    }

    fn materialize(self) -> Self {
        self
    }

    fn valid(&self) -> Self {
        Self {
            device: self.device.clone().without_autodiff(),
            ..self.clone()
        }
    }

    fn train(mut self) -> Self {
        self.device = self.device.autodiff();
        self
    }
}

impl ModuleDisplayDefault for HostState {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add_formatted(&alloc::format!("HostState({:?})", self.values))
            .optional()
    }
}

impl ModuleDisplay for HostState {}

/// A vector's values on the host as f32.
pub(crate) fn to_host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32")
}
