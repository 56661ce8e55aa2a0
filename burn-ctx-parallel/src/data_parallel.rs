//! Data parallelism: every rank trains a replica of one model on its share of the batch, and
//! the gradients are summed over the group before each update, so every rank applies the
//! same update to the same weights.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use burn_sparse_attn::SparseAttnError;

use crate::CommError;
use crate::Communicator;

/// A parameter's place in the flat gradient vector.
struct Slot {
    id: ParamId,
    dims: Vec<usize>,
    /// Whether this rank has a gradient for it.
    present: bool,
}

/// Lists `module`'s float parameters in visiting order and moves this rank's gradients of
/// them into one flat vector, with zeros for the parameters it has none for.
struct Flatten<'a> {
    grads: &'a mut GradientsParams,
    device: &'a Device,
    slots: Vec<Slot>,
    pieces: Vec<Tensor<1>>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dims = param.val().dims().to_vec();
        let n: usize = dims.iter().product();
        let grad = self.grads.remove::<D>(param.id);
        let present = grad.is_some();
        self.pieces.push(match grad {
            Some(g) => g.reshape([n]).to_device(self.device),
            None => Tensor::zeros([n], self.device),
        });
        self.slots.push(Slot {
            id: param.id,
            dims,
            present,
        });
    }
}

/// Puts each summed gradient back under its parameter.
struct Unflatten<'a> {
    slots: std::slice::Iter<'a, Slot>,
    present: std::vec::IntoIter<bool>,
    at: usize,
    flat: Tensor<1>,
    out: GradientsParams,
}

impl ModuleVisitor for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let slot = self
            .slots
            .next()
            .expect("the module is visited in the same order");
        debug_assert_eq!(slot.id, param.id);
        let n: usize = slot.dims.iter().product();
        if self.present.next().expect("one flag per parameter") {
            let dims: [usize; D] = slot
                .dims
                .clone()
                .try_into()
                .expect("a parameter keeps its rank");
            self.out.register(
                slot.id,
                self.flat.clone().narrow(0, self.at, n).reshape(dims),
            );
        }
        self.at += n;
    }
}

/// The sum over every rank of `comm` of each rank's `grads` of `module` (the gradients of
/// its share of the batch, scaled so that the shares add up to the batch's loss), returned
/// to every rank. A parameter gets a gradient when any rank has one for it; ranks without
/// one contribute zeros. All gradients travel as one flat f32 vector through
/// [`Communicator::all_reduce`] (a reduce-scatter then an all-gather, `2·(world − 1)/world`
/// of the model's size sent per rank), so every rank receives the same bits.
///
/// Every rank passes the same model structure: a rank whose parameter list differs gets a
/// named error instead of a wrong sum.
pub fn all_reduce_gradients<M: Module>(
    comm: &Communicator,
    module: &M,
    mut grads: GradientsParams,
) -> Result<GradientsParams, CommError> {
    const F: &str = "all_reduce_gradients";
    // Gradients live on the inner (non-autodiff) device.
    let device = comm.device().clone().without_autodiff();
    let mut flatten = Flatten {
        grads: &mut grads,
        device: &device,
        slots: Vec::new(),
        pieces: Vec::new(),
    };
    module.visit(&mut flatten);
    let Flatten {
        slots, mut pieces, ..
    } = flatten;
    if slots.is_empty() {
        return Ok(GradientsParams::new());
    }
    // One presence flag per parameter rides along: summed, it says whether any rank had one.
    let flags: Vec<f32> = slots
        .iter()
        .map(|s| if s.present { 1.0 } else { 0.0 })
        .collect();
    let params = flags.len();
    pieces.push(Tensor::from_data(
        burn::tensor::TensorData::new(flags, [params]),
        &device,
    ));
    let flat = Tensor::cat(pieces, 0);
    let total = flat.dims()[0];
    let summed = comm
        .with_device(device)
        .all_reduce(flat)
        .map_err(|e| match e {
            CommError::Argument(e) => CommError::Argument(SparseAttnError { function: F, ..e }),
            CommError::Peer { rank, cause, .. } => CommError::Peer {
                function: F,
                rank,
                cause,
            },
        })?;
    let present: Vec<bool> = summed
        .clone()
        .narrow(0, total - params, params)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 flags")
        .into_iter()
        .map(|f| f > 0.0)
        .collect();
    let mut unflatten = Unflatten {
        slots: slots.iter(),
        present: present.into_iter(),
        at: 0,
        flat: summed,
        out: GradientsParams::new(),
    };
    module.visit(&mut unflatten);
    Ok(unflatten.out)
}

/// Collects every float parameter of a module, flattened, in visiting order.
struct Values {
    pieces: Vec<Tensor<1>>,
    device: Device,
}

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.pieces
            .push(Tensor::<D>::from_data(value.into_data(), &self.device).reshape([n]));
    }
}

/// Sets every float parameter from a flat vector, in visiting order, keeping each
/// parameter's id, device and whether it takes gradients.
struct Assign {
    flat: Tensor<1>,
    at: usize,
}

impl ModuleMapper for Assign {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (flat, at) = (&self.flat, &mut self.at);
        param.map(|value| {
            let dims = value.dims();
            let n: usize = dims.iter().product();
            let tracked = value.is_require_grad();
            let new = Tensor::<D>::from_data(
                flat.clone().narrow(0, *at, n).reshape(dims).into_data(),
                &value.device(),
            );
            *at += n;
            if tracked { new.require_grad() } else { new }
        })
    }
}

/// `module` with rank `root`'s weights on every rank of `comm` (one broadcast of all float
/// parameters): what starts a data-parallel run from one initialisation whatever each
/// rank's random generator did.
pub fn broadcast_module<M: Module>(
    comm: &Communicator,
    module: M,
    root: usize,
) -> Result<M, CommError> {
    if comm.world() == 1 {
        return Ok(module);
    }
    let device = comm.device().clone().without_autodiff();
    let mut values = Values {
        pieces: Vec::new(),
        device: device.clone(),
    };
    module.visit(&mut values);
    if values.pieces.is_empty() {
        return Ok(module);
    }
    let flat = comm
        .with_device(device)
        .broadcast(Tensor::cat(values.pieces, 0), root)?;
    Ok(module.map(&mut Assign { flat, at: 0 }))
}
