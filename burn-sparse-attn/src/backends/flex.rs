//! Flex: native CPU kernels (`kernel::cpu`) on contiguous f32 buffers.

use alloc::vec;

use burn::backend::{
    Flex, TensorMetadata,
    ops::{FloatTensorOps, IntTensorOps},
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, FloatDType, IntDType, TensorData};
use burn_flex::FlexTensor;

use crate::SparseAttnOps;
use crate::kernel::cpu::{self, AttnShape, BackwardInputs, SelectShape};

/// A tensor as contiguous f32 (cast and copied only when needed).
fn f32_buffer(t: FloatTensor<Flex>) -> FlexTensor {
    let t = if t.dtype() == DType::F32 {
        t
    } else {
        Flex::float_cast(t, FloatDType::F32)
    };
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn i64_buffer(t: IntTensor<Flex>) -> FlexTensor {
    let t = if t.dtype() == DType::I64 {
        t
    } else {
        Flex::int_cast(t, IntDType::I64)
    };
    if t.as_slice::<i64>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 buffer")
}

fn float_output(data: alloc::vec::Vec<f32>, shape: [usize; 4], dtype: DType) -> FloatTensor<Flex> {
    let t = FlexTensor::from_data(TensorData::new(data, shape));
    if dtype == DType::F32 {
        t
    } else {
        Flex::float_cast(t, dtype.into())
    }
}

fn attn_shape(
    q: &FlexTensor,
    k: &FlexTensor,
    index: &FlexTensor,
    group_size: usize,
    key_block: usize,
) -> AttnShape {
    let (qs, ks) = (q.shape(), k.shape());
    AttnShape {
        bh: qs[0] * qs[1],
        query_len: qs[2],
        key_len: ks[2],
        head_dim: qs[3],
        group_size,
        key_block,
        budget: index.shape()[3],
    }
}

impl SparseAttnOps for Flex {
    fn select_critical_keys(
        q_lr: FloatTensor<Self>,
        k_lr: FloatTensor<Self>,
        group_size: usize,
        key_block: usize,
        budget: usize,
        index_dtype: IntDType,
    ) -> IntTensor<Self> {
        let (qs, ks) = (q_lr.shape(), k_lr.shape());
        let shape = SelectShape {
            bh: qs[0] * qs[1],
            query_len: qs[2],
            key_len: ks[2],
            rank: qs[3],
            group_size,
            key_block,
            budget,
        };
        let (q_lr, k_lr) = (f32_buffer(q_lr), f32_buffer(k_lr));
        let groups = shape.query_len.div_ceil(group_size);
        let mut ids = vec![0i64; shape.bh * groups * budget];
        cpu::select_critical_keys(shape, f32s(&q_lr), f32s(&k_lr), &mut ids);
        let ids = FlexTensor::from_data(TensorData::new(ids, [qs[0], qs[1], groups, budget]));
        if index_dtype == IntDType::I64 {
            ids
        } else {
            Flex::int_cast(ids, index_dtype)
        }
    }

    fn sparse_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        index: IntTensor<Self>,
        group_size: usize,
        key_block: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = q.dtype();
        let (q, k, v, index) = (
            f32_buffer(q),
            f32_buffer(k),
            f32_buffer(v),
            i64_buffer(index),
        );
        let shape = attn_shape(&q, &k, &index, group_size, key_block);
        let dims = q.shape();
        let mut out = vec![0.0f32; shape.bh * shape.query_len * shape.head_dim];
        let mut lse = vec![0.0f32; shape.bh * shape.query_len];
        let ids = index.as_slice::<i64>().expect("contiguous i64 index");
        cpu::sparse_attention_forward(
            shape,
            [f32s(&q), f32s(&k), f32s(&v)],
            ids,
            scale as f32,
            &mut out,
            &mut lse,
        );
        let out = float_output(out, [dims[0], dims[1], dims[2], dims[3]], dtype);
        let lse = FlexTensor::from_data(TensorData::new(lse, [dims[0], dims[1], dims[2]]));
        (out, lse)
    }

    fn sparse_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        index: IntTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        group_size: usize,
        key_block: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtypes = [q.dtype(), k.dtype(), v.dtype()];
        let (q, k, v, index) = (
            f32_buffer(q),
            f32_buffer(k),
            f32_buffer(v),
            i64_buffer(index),
        );
        let (out, lse, grad_out) = (f32_buffer(out), f32_buffer(lse), f32_buffer(grad_out));
        let shape = attn_shape(&q, &k, &index, group_size, key_block);
        let (qd, kd) = (q.shape(), k.shape());
        let mut dq = vec![0.0f32; shape.bh * shape.query_len * shape.head_dim];
        let mut dk = vec![0.0f32; shape.bh * shape.key_len * shape.head_dim];
        let mut dv = vec![0.0f32; shape.bh * shape.key_len * shape.head_dim];
        let inputs = BackwardInputs {
            q: f32s(&q),
            k: f32s(&k),
            v: f32s(&v),
            out: f32s(&out),
            lse: f32s(&lse),
            grad_out: f32s(&grad_out),
            index: index.as_slice::<i64>().expect("contiguous i64 index"),
        };
        cpu::sparse_attention_backward(shape, inputs, scale as f32, [&mut dq, &mut dk, &mut dv]);
        (
            float_output(dq, [qd[0], qd[1], qd[2], qd[3]], dtypes[0]),
            float_output(dk, [kd[0], kd[1], kd[2], kd[3]], dtypes[1]),
            float_output(dv, [kd[0], kd[1], kd[2], kd[3]], dtypes[2]),
        )
    }
}
