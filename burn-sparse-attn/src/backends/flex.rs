//! Flex: native CPU kernels (`kernel::cpu`) on contiguous f32 buffers.

use alloc::vec;

use burn::backend::{
    Flex, TensorMetadata,
    ops::{FloatTensorOps, IntTensorOps},
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, FloatDType, IntDType, TensorData};
use burn_flex::FlexTensor;

use crate::kernel::cpu::{self, BackwardInputs};
use crate::layout::ProblemShape;
use crate::{AttnInputs, SelectionConfig, SparseAttnOps};

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

/// `inputs` as contiguous f32 / i64 buffers, with the call's sizes.
struct Buffers {
    shape: ProblemShape,
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    index: FlexTensor,
    scale: f32,
}

impl Buffers {
    fn of(inputs: AttnInputs<Flex>) -> Self {
        let shape = inputs.shape();
        Self {
            shape,
            q: f32_buffer(inputs.q),
            k: f32_buffer(inputs.k),
            v: f32_buffer(inputs.v),
            index: i64_buffer(inputs.index),
            scale: inputs.layout.scale as f32,
        }
    }

    fn index(&self) -> &[i64] {
        self.index.as_slice::<i64>().expect("contiguous i64 index")
    }

    fn query_shape(&self) -> [usize; 4] {
        let s = self.shape;
        [s.batch, s.heads, s.query_len, s.head_dim]
    }

    fn key_shape(&self) -> [usize; 4] {
        let s = self.shape;
        [s.batch, s.heads, s.key_len, s.head_dim]
    }
}

impl SparseAttnOps for Flex {
    fn select_critical_keys(
        q_lr: FloatTensor<Self>,
        k_lr: FloatTensor<Self>,
        selection: SelectionConfig,
        index_dtype: IntDType,
    ) -> IntTensor<Self> {
        let shape = ProblemShape::of_selection(&q_lr.shape(), &k_lr.shape(), &selection);
        let (q_lr, k_lr) = (f32_buffer(q_lr), f32_buffer(k_lr));
        let mut ids = vec![0i64; shape.bh() * shape.groups() * shape.budget];
        cpu::select_critical_keys(shape, f32s(&q_lr), f32s(&k_lr), &mut ids);
        let dims = [shape.batch, shape.heads, shape.groups(), shape.budget];
        let ids = FlexTensor::from_data(TensorData::new(ids, dims));
        if index_dtype == IntDType::I64 {
            ids
        } else {
            Flex::int_cast(ids, index_dtype)
        }
    }

    fn sparse_attention_forward(
        inputs: AttnInputs<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = inputs.q.dtype();
        let x = Buffers::of(inputs);
        let shape = x.shape;
        let mut out = vec![0.0f32; shape.bh() * shape.query_len * shape.head_dim];
        let mut lse = vec![0.0f32; shape.bh() * shape.query_len];
        cpu::sparse_attention_forward(
            shape,
            [f32s(&x.q), f32s(&x.k), f32s(&x.v)],
            x.index(),
            x.scale,
            &mut out,
            &mut lse,
        );
        let out = float_output(out, x.query_shape(), dtype);
        let lse_shape = [shape.batch, shape.heads, shape.query_len];
        let lse = FlexTensor::from_data(TensorData::new(lse, lse_shape));
        (out, lse)
    }

    fn sparse_attention_backward(
        inputs: AttnInputs<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dtypes = [inputs.q.dtype(), inputs.k.dtype(), inputs.v.dtype()];
        let x = Buffers::of(inputs);
        let shape = x.shape;
        let (out, lse, grad_out) = (f32_buffer(out), f32_buffer(lse), f32_buffer(grad_out));
        let mut dq = vec![0.0f32; shape.bh() * shape.query_len * shape.head_dim];
        let mut dk = vec![0.0f32; shape.bh() * shape.key_len * shape.head_dim];
        let mut dv = vec![0.0f32; shape.bh() * shape.key_len * shape.head_dim];
        let grads = BackwardInputs {
            q: f32s(&x.q),
            k: f32s(&x.k),
            v: f32s(&x.v),
            out: f32s(&out),
            lse: f32s(&lse),
            grad_out: f32s(&grad_out),
            index: x.index(),
        };
        cpu::sparse_attention_backward(shape, grads, x.scale, [&mut dq, &mut dk, &mut dv]);
        (
            float_output(dq, x.query_shape(), dtypes[0]),
            float_output(dk, x.key_shape(), dtypes[1]),
            float_output(dv, x.key_shape(), dtypes[2]),
        )
    }
}
