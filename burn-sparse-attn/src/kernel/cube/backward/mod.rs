//! Sparse attention backward without atomics, as CubeCL kernels:
//! - `Δ = rowsum(dO ∘ O)`, one unit per row;
//! - dQ by gathering: a cube per query group streams the group's keys through shared memory,
//!   as the forward does, and recomputes `P` from the saved log-sum-exp;
//! - dK and dV by inverting the index: for every key unit, the query groups that selected it
//!   (counted, prefix-summed, then listed in group order), after which every key accumulates
//!   over exactly those groups' rows: on the tiles (tensor cores where the device has them)
//!   where a unit holds whole fragments of keys, else a plane's lanes per key. Each output
//!   element has one writer.

use crate::AttnInputs;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::{TensorMetadata, ops::IntTensorOps};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

mod dkdv;
pub(crate) mod dkdv_tiled;
pub(crate) mod dq;
mod invert;

pub(crate) use dkdv_tiled::key_span;

use dkdv::{dkdv_kernel, dkdv_lanes};
use dkdv_tiled::dkdv_tiled_kernel;
use dq::dq_kernel;
use invert::invert_kernel;

use super::matrix::MatrixPlan;
use super::tiles::{group_grid, unrolls};

/// Threads of the element-wise kernels.
pub(super) const UNITS: u32 = 128;

#[cube(launch)]
fn row_delta_kernel<F: Float>(
    d_out: &Tensor<F>,
    out: &Tensor<F>,
    delta: &mut Tensor<f32>,
    heads: u32,
    query_len: u32,
    rows: u32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: ElemType,
) {
    let r = ABSOLUTE_POS;
    if r >= rows as usize {
        terminate!();
    }
    let s = r % query_len as usize;
    let h = (r / query_len as usize) % heads as usize;
    let b = r / (query_len as usize * heads as usize);
    let do_base = b * d_out.stride(0) + h * d_out.stride(1) + s * d_out.stride(2);
    let o_base = b * out.stride(0) + h * out.stride(1) + s * out.stride(2);
    let mut sum = f32::new(0.0);
    for d in 0..head_dim {
        sum += f32::cast_from(d_out[do_base + d * d_out.stride(3)])
            * f32::cast_from(out[o_base + d * out.stride(3)]);
    }
    let at = b * delta.stride(0) + h * delta.stride(1) + s * delta.stride(2);
    delta[at] = sum;
}

/// A unit per element, in cubes of [`UNITS`] spread over as many grid dims as the device's
/// per-dim cube limit needs (`ABSOLUTE_POS` is linear over them).
fn elementwise(client: &cubecl::client::Client, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(UNITS);
    (cubecl::calculate_cube_count_elemwise(client, n, dim), dim)
}

/// Launches the backward kernels → `(dq, dk, dv)` typed like `q, k, v`; dQ laid out by
/// `plan` ([`MatrixPlan::new`] with two score tiles), dK/dV by `key_plan` (cubes of `span`
/// keys, [`key_span`]) where there is one, else a kernel per key.
pub(crate) fn sparse_attention_backward(
    inputs: AttnInputs<CubeBackend>,
    out: CubeTensor,
    lse: CubeTensor,
    grad_out: CubeTensor,
    plan: MatrixPlan,
    key_plan: Option<(usize, MatrixPlan)>,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let shape = inputs.shape();
    let (groups, units) = (shape.groups(), shape.units());
    let scale = inputs.layout.scale;
    let [q, k, v, index, out, lse, grad_out] = [
        inputs.q,
        inputs.k,
        inputs.v,
        inputs.index,
        out,
        lse,
        grad_out,
    ]
    .map(into_contiguous);
    let client = q.client.clone();
    let device = q.device.clone();
    let (fdt, idt) = (q.dtype, index.dtype);
    let empty = |shape: Shape, dtype: DType| {
        empty_device_dtype(client.clone(), device.clone(), shape, dtype)
    };

    let rows = shape.batch * shape.heads * shape.query_len;
    let delta = empty(
        Shape::new([shape.batch, shape.heads, shape.query_len]),
        DType::F32,
    );
    let (count, dim) = elementwise(&client, rows);
    row_delta_kernel::launch(
        &client,
        count,
        dim,
        grad_out.clone().into_tensor_arg(),
        out.into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        shape.heads as u32,
        shape.query_len as u32,
        rows as u32,
        shape.head_dim,
        dtype_to_storage_type(fdt),
    );

    let dq = empty(q.shape(), fdt);
    let (cubes, cube_dim) = group_grid(&shape, plan);
    dq_kernel::launch(
        &client,
        cubes,
        cube_dim,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        index.clone().into_tensor_arg(),
        grad_out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        scale as f32,
        shape.query_len as u32,
        shape.key_len as u32,
        shape.budget as u32,
        shape.group_size,
        shape.key_block,
        shape.head_dim,
        plan,
        plan.kernel_dtypes(fdt, idt),
    );

    // Invert the index: counts per unit, exclusive prefix sums, then the lists.
    let per_unit = Shape::new([shape.batch, shape.heads, units]);
    let counts = empty(per_unit.clone(), idt);
    let lists = empty(
        Shape::new([shape.batch, shape.heads, groups * shape.budget]),
        idt,
    );
    // Unused arguments get their own scratch tensors: a writable binding must not alias.
    let scratch = || empty(Shape::new([1, 1, 1]), idt);
    let launch_invert = |offsets: CubeTensor, counts: CubeTensor, lists: CubeTensor, fill: bool| {
        let (count, dim) = elementwise(&client, shape.batch * shape.heads * units);
        invert_kernel::launch(
            &client,
            count,
            dim,
            index.clone().into_tensor_arg(),
            offsets.into_tensor_arg(),
            counts.into_tensor_arg(),
            lists.into_tensor_arg(),
            shape.heads as u32,
            groups as u32,
            shape.budget as u32,
            units as u32,
            fill,
            dtype_to_storage_type(idt),
        );
    };
    launch_invert(scratch(), counts.clone(), scratch(), false);
    let inclusive = CubeBackend::int_cumsum(counts.clone(), 2);
    let offsets = CubeBackend::int_sub(inclusive, counts.clone());
    launch_invert(offsets.clone(), scratch(), lists.clone(), true);

    let dk = empty(k.shape(), k.dtype);
    let dv = empty(v.shape(), v.dtype);
    if let Some((span, key_plan)) = key_plan {
        dkdv_tiled_kernel::launch(
            &client,
            CubeCount::Static(
                shape.key_len.div_ceil(span) as u32,
                shape.heads as u32,
                shape.batch as u32,
            ),
            CubeDim::new_1d(key_plan.units()),
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            grad_out.into_tensor_arg(),
            lse.into_tensor_arg(),
            delta.into_tensor_arg(),
            counts.into_tensor_arg(),
            offsets.into_tensor_arg(),
            lists.into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            scale as f32,
            shape.query_len as u32,
            shape.key_len as u32,
            shape.group_size,
            shape.key_block,
            span,
            shape.head_dim,
            key_plan,
            key_plan.kernel_dtypes(fdt, idt),
        );
        return (dq, dk, dv);
    }
    let lanes = dkdv_lanes(&client, shape.head_dim);
    let (count, dim) = elementwise(&client, shape.batch * shape.heads * shape.key_len * lanes);
    dkdv_kernel::launch(
        &client,
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        counts.into_tensor_arg(),
        offsets.into_tensor_arg(),
        lists.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        scale as f32,
        shape.heads as u32,
        shape.query_len as u32,
        shape.key_len as u32,
        shape.group_size,
        shape.key_block,
        shape.head_dim,
        lanes,
        unrolls(&client),
        [dtype_to_storage_type(fdt), dtype_to_storage_type(idt)],
    );
    (dq, dk, dv)
}
