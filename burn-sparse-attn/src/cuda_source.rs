//! The CUDA C++ that CubeCL generates for the tiled attention kernels (forward, dQ, dK/dV),
//! without a GPU: each kernel variant is expanded against the properties of an sm_80+ device (tensor cores for f16,
//! bf16 and TF32) and compiled by CubeCL's C++ backend. `scripts/gpu/compile-cuda.sh` hands
//! the sources to `nvcc` for sm_80 and sm_90, so a kernel that NVRTC would refuse on the GPU
//! fails on a CPU machine first.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use burn::tensor::DType;
use burn_cubecl::cubecl;
use cubecl::Compiler;
use cubecl::features::{Features, MmaConfig, Plane};
use cubecl::ir::{
    DeviceIdentity, DeviceProperties, ElemType, FloatKind, HardwareProperties,
    MemoryDeviceProperties, MmaProperties, TargetProperties, VectorSize,
};
use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl_common::device::{DeviceId, ServiceId};
use cubecl_common::profile::TimingMethod;
use cubecl_cpp::shared::{CompilationOptions, CppCompiler};
use cubecl_cpp::target::Cuda;
use cubecl_environment::stream::StreamId;

use crate::F32Precision;
use crate::kernel::cube::backward::dkdv_tiled::{dkdv_tiled_kernel, key_span};
use crate::kernel::cube::backward::dq::dq_kernel;
use crate::kernel::cube::forward::sparse_forward_kernel;
use crate::kernel::cube::matrix::MatrixPlan;

/// One generated kernel: a name that says its variant, and its CUDA C++.
#[derive(Clone, Debug)]
pub struct CudaSource {
    /// `<forward|dq|dkdv>_<dtype>_d<head dim>_g<group>_b<key block>_<tile kind>`.
    pub name: String,
    /// The kernel as NVRTC would receive it.
    pub source: String,
}

/// Every forward, dQ and tiled dK/dV variant the GPU pass runs: f16, bf16 and f32 (exact and
/// TF32), head dims 64, 128 and 96 (padded), groups of 32 and 64 rows, single keys and 64-key
/// blocks (dK/dV on tiles only with the blocks).
pub fn kernel_sources() -> Result<Vec<CudaSource>, String> {
    let properties = sm80_properties();
    let mut sources = Vec::new();
    for (dtype, products) in [
        (DType::F16, F32Precision::Exact),
        (DType::BF16, F32Precision::Exact),
        (DType::F32, F32Precision::Tf32),
        (DType::F32, F32Precision::Exact),
    ] {
        for head_dim in [64, 128, 96] {
            for (group_size, key_block) in [(32, 1), (64, 64)] {
                for (kernel, score_tiles) in
                    [(Kernel::Forward, 1), (Kernel::Dq, 2), (Kernel::DkDv, 2)]
                {
                    // dK/dV cubes own a span of keys; units of single keys take no tiles.
                    let rows = match kernel {
                        Kernel::DkDv => match key_span(key_block) {
                            Some(span) => span,
                            None => continue,
                        },
                        _ => group_size,
                    };
                    let plan = MatrixPlan::new(
                        &properties,
                        dtype,
                        rows,
                        head_dim,
                        products,
                        true,
                        score_tiles,
                    )
                    .ok_or_else(|| format!("no plan for {dtype:?} d{head_dim}"))?;
                    let name = format!(
                        "{}_{}_d{head_dim}_g{group_size}_b{key_block}_{}",
                        kernel.name(),
                        dtype_name(dtype, products),
                        if plan.tensor_cores { "cmma" } else { "scalar" }
                    );
                    let case = Case {
                        dtype,
                        plan,
                        group_size,
                        key_block,
                        rows,
                        head_dim,
                    };
                    let source = kernel_source(&properties, kernel, case)
                        .map_err(|e| format!("{name}: {e}"))?;
                    sources.push(CudaSource { name, source });
                }
            }
        }
    }
    Ok(sources)
}

fn dtype_name(dtype: DType, products: F32Precision) -> &'static str {
    match (dtype, products) {
        (DType::F16, _) => "f16",
        (DType::BF16, _) => "bf16",
        (_, F32Precision::Tf32) => "tf32",
        _ => "f32",
    }
}

#[derive(Clone, Copy)]
enum Kernel {
    Forward,
    Dq,
    DkDv,
}

impl Kernel {
    fn name(self) -> &'static str {
        match self {
            Kernel::Forward => "forward",
            Kernel::Dq => "dq",
            Kernel::DkDv => "dkdv",
        }
    }
}

/// One kernel variant's comptime arguments.
#[derive(Clone, Copy)]
struct Case {
    dtype: DType,
    plan: MatrixPlan,
    group_size: usize,
    key_block: usize,
    /// Rows a cube owns: the group, or a dK/dV cube's keys.
    rows: usize,
    head_dim: usize,
}

fn kernel_source(
    properties: &DeviceProperties,
    kernel: Kernel,
    case: Case,
) -> Result<String, String> {
    let (batch, heads, seq) = (1, 2, 1024);
    let budget = 8;
    let groups = seq / case.group_size;
    let elem = case.dtype.size();
    let tensor = |shape: [usize; 4], elem_size: usize| {
        let strides = [
            shape[1] * shape[2] * shape[3],
            shape[2] * shape[3],
            shape[3],
            1,
        ];
        let size = (shape.iter().product::<usize>() * elem_size) as u64;
        let handle = Handle::new(
            ServiceId::of::<CudaSource>(DeviceId::new(0, 0)),
            StreamId::current(),
            size,
        );
        // SAFETY: the argument only describes a launch that is never made.
        unsafe { TensorArg::from_raw_parts(handle, strides.into(), shape.into()) }
    };
    let rows = || tensor([batch, heads, seq, case.head_dim], elem);
    let per_row = || tensor([batch, heads, seq, 1], 4);
    let index = || tensor([batch, heads, groups, budget], 4);
    let per_unit = || tensor([batch, heads, seq.div_ceil(case.key_block), 1], 4);
    let lists = || tensor([batch, heads, groups * budget, 1], 4);
    let properties = Arc::new(properties.clone());
    let target = Arc::new(target_properties());
    let cubes = match kernel {
        Kernel::DkDv => seq.div_ceil(case.rows),
        _ => groups,
    };
    let count = CubeCount::Static(cubes as u32, heads as u32, batch as u32);
    let dim = CubeDim::new_1d(case.plan.units());
    let dtypes = case.plan.kernel_dtypes(case.dtype, DType::I32);
    let (scale, len, budget) = (0.125, seq as u32, budget as u32);
    let (group_size, key_block, head_dim, plan) =
        (case.group_size, case.key_block, case.head_dim, case.plan);
    let definition = match kernel {
        Kernel::Forward => cubecl::define_kernel(&sparse_forward_kernel::create_dummy_kernel(
            properties,
            target,
            count,
            dim,
            rows(),
            rows(),
            rows(),
            index(),
            rows(),
            per_row(),
            scale,
            len,
            len,
            budget,
            group_size,
            key_block,
            head_dim,
            plan,
            dtypes,
        )),
        Kernel::Dq => cubecl::define_kernel(&dq_kernel::create_dummy_kernel(
            properties,
            target,
            count,
            dim,
            rows(),
            rows(),
            rows(),
            index(),
            rows(),
            per_row(),
            per_row(),
            rows(),
            scale,
            len,
            len,
            budget,
            group_size,
            key_block,
            head_dim,
            plan,
            dtypes,
        )),
        Kernel::DkDv => cubecl::define_kernel(&dkdv_tiled_kernel::create_dummy_kernel(
            properties,
            target,
            count,
            dim,
            rows(),
            rows(),
            rows(),
            rows(),
            per_row(),
            per_row(),
            per_unit(),
            per_unit(),
            lists(),
            rows(),
            rows(),
            scale,
            len,
            len,
            group_size,
            key_block,
            case.rows,
            head_dim,
            plan,
            dtypes,
        )),
    }
    .map_err(|e| e.to_string())?;
    CppCompiler::<Cuda>::default()
        .compile(definition, &CompilationOptions::default())
        .map(|kernel| kernel.to_string())
        .map_err(|e| e.to_string())
}

/// An sm_80 device as CubeCL's CUDA runtime describes one: warps of 32, 48 KiB of static
/// shared memory, WMMA fragments for f16 and bf16 (16×16×16) and TF32 (16×16×8).
fn sm80_properties() -> DeviceProperties {
    let mut features = Features::default();
    features.plane.insert(Plane::Ops);
    for (elem, k) in [
        (FloatKind::F16, 16),
        (FloatKind::BF16, 16),
        (FloatKind::TF32, 8),
    ] {
        features.matmul.cmma.insert(MmaConfig {
            a_type: ElemType::Float(elem),
            b_type: ElemType::Float(elem),
            cd_type: ElemType::Float(FloatKind::F32),
            m: 16,
            n: 16,
            k,
        });
    }
    let hardware = HardwareProperties {
        load_width: 128,
        vector_register_count: None,
        plane_size_min: 32,
        plane_size_max: 32,
        max_bindings: u32::MAX,
        max_shared_memory_size: 48 * 1024,
        max_cube_count: (i32::MAX as u32, u16::MAX as u32, u16::MAX as u32),
        max_units_per_cube: 1024,
        max_cube_dim: (1024, 1024, 64),
        num_streaming_multiprocessors: Some(108),
        num_cpu_cores: None,
        last_level_cache_size: None,
        num_tensor_cores: None,
        min_tensor_cores_dim: None,
        max_vector_size: VectorSize::MAX,
        cube_mma_reserved_shared_memory: 0,
    };
    let mut properties = DeviceProperties::new(
        features,
        MemoryDeviceProperties::new(u64::MAX, 32),
        hardware,
        TimingMethod::System,
        DeviceIdentity {
            name: "sm_80 (offline)".to_string(),
            fingerprint: "ptx_sm80".to_string(),
            physical: None,
        },
    );
    cubecl_cpp::register_supported_types(&mut properties);
    properties
}

fn target_properties() -> TargetProperties {
    use cubecl::cmma::MatrixLayout;
    TargetProperties {
        mma: MmaProperties {
            register_size_bits: 32,
            const_plane_size: 32,
            register_layout_a: MatrixLayout::RowMajor,
            register_layout_b: MatrixLayout::ColMajor,
            register_layout_acc: MatrixLayout::RowMajor,
            register_duplication_a: 1,
            register_duplication_b: 1,
            register_duplication_acc: 1,
            contiguous_elements: Default::default(),
        },
    }
}
