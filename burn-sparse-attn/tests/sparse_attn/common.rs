//! Shared helpers: deterministic inputs, the dense oracles and comparisons.
#![allow(dead_code)]

use burn::tensor::{
    Bool, Device, Int, Tensor, TensorData, Tolerance, activation::softmax, module::attention,
    ops::AttentionModuleOptions,
};
use burn_sparse_attn::IndexShape;
use burn_sparse_attn::{
    CriticalKeys, SparseAttentionOptions, SparseAttentionOutput, SparseAttnError, sparse_attention,
};

/// One test per backend compiled in for each check `fn(&Device)`, named
/// `<module>::<backend>::<check>`: a failure names its backend, and backends run in parallel.
/// A build with `vulkan` or `cuda` (never in CI) runs the same checks on the machine's GPU.
macro_rules! per_backend {
    ($($check:ident),+ $(,)?) => {
        mod flex {
            $(#[test]
            fn $check() {
                super::$check(&burn::tensor::Device::flex());
            })+
        }
        #[cfg(feature = "ndarray")]
        mod ndarray {
            $(#[test]
            fn $check() {
                super::$check(&burn::tensor::Device::ndarray());
            })+
        }
        #[cfg(feature = "wgpu")]
        mod wgpu {
            $(#[test]
            fn $check() {
                super::$check(&burn::tensor::Device::wgpu(burn::tensor::DeviceKind::Cpu));
            })+
        }
        #[cfg(feature = "vulkan")]
        mod vulkan {
            $(#[test]
            fn $check() {
                super::$check(&burn::tensor::Device::vulkan(
                    burn::tensor::DeviceKind::DefaultDevice,
                ));
            })+
        }
        #[cfg(feature = "cuda")]
        mod cuda {
            $(#[test]
            fn $check() {
                super::$check(&burn::tensor::Device::cuda(0));
            })+
        }
    };
}
pub(crate) use per_backend;

/// Tolerance for a result of Burn's own dense matmul on `device`: on CUDA, Burn's matmul
/// (cubek-matmul) stages f32 operands as TF32 on the tensor cores (a 10-bit mantissa), which
/// leaves relative errors of a few 1e-4; our kernels keep f32 and are held to 1e-4.
pub fn burn_matmul_tolerance(device: &Device) -> f32 {
    match format!("{device:?}").contains("Cuda") {
        true => 1e-3,
        false => 1e-4,
    }
}

/// Where the oracles run.
pub fn oracle_device() -> Device {
    Device::flex()
}

/// A small deterministic generator, so every backend sees the same numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn random_data(shape: [usize; 4], seed: u64) -> TensorData {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    TensorData::new((0..n).map(|_| rng.uniform()).collect::<Vec<f32>>(), shape)
}

/// Inputs on a grid of 1/8 in [-1, 1]: with power-of-two groups and blocks every score is
/// exact, so native and reference must agree id for id, ties included.
pub fn grid_data(shape: [usize; 4], seed: u64) -> TensorData {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    TensorData::new(
        (0..n)
            .map(|_| (rng.below(17) as f32 - 8.0) / 8.0)
            .collect::<Vec<f32>>(),
        shape,
    )
}

/// Random q `[b, h, sq, d]`, k and v `[b, h, sk, d]` and an output weight like q (the loss
/// `sum(out · w)` of a gradient check), from `seed` on.
pub fn gradient_case_data([b, h, sq, sk, d]: [usize; 5], seed: u64) -> [TensorData; 4] {
    [
        random_data([b, h, sq, d], seed),
        random_data([b, h, sk, d], seed + 1),
        random_data([b, h, sk, d], seed + 2),
        random_data([b, h, sq, d], seed + 3),
    ]
}

pub fn tensor(data: &TensorData, device: &Device) -> Tensor<4> {
    Tensor::from_data(data.clone(), device)
}

/// Random distinct ascending ids in `0..units`, `budget` per row.
pub fn random_index_data(
    [b, h, groups]: [usize; 3],
    units: usize,
    budget: usize,
    seed: u64,
) -> TensorData {
    let mut rng = Rng::new(seed);
    let mut ids = Vec::with_capacity(b * h * groups * budget);
    let mut pool: Vec<i64> = Vec::new();
    for _ in 0..b * h * groups {
        pool.clear();
        pool.extend(0..units as i64);
        for i in 0..budget {
            let j = i + rng.below(units - i);
            pool.swap(i, j);
        }
        let mut row = pool[..budget].to_vec();
        row.sort_unstable();
        ids.extend(row);
    }
    TensorData::new(ids, [b, h, groups, budget])
}

/// Attention over explicit scores: softmax(mask(q·kᵀ·scale))·v, from plain tensor ops.
pub fn dense_masked_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    scale: f64,
) -> Tensor<4> {
    let scores = masked_scores(q, k, mask, scale);
    softmax(scores, 3).matmul(v)
}

pub fn masked_scores(
    q: Tensor<4>,
    k: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    scale: f64,
) -> Tensor<4> {
    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    match mask {
        Some(mask) => scores.mask_fill(mask, f32::NEG_INFINITY),
        None => scores,
    }
}

/// Burn's own dense attention.
pub fn burn_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    attention(q, k, v, mask, None, AttentionModuleOptions::default())
}

pub fn assert_close<const D: usize>(
    actual: Tensor<D>,
    expected: Tensor<D>,
    tolerance: f32,
    what: &str,
) {
    let actual = actual.into_data().convert::<f32>();
    let expected = expected.into_data().convert::<f32>();
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    let a = actual.as_slice::<f32>().unwrap();
    let e = expected.as_slice::<f32>().unwrap();
    let mut worst = (0.0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(e).enumerate() {
        assert!(x.is_finite(), "{what}: element {i} is {x}");
        let err = (x - y).abs() / (1.0 + y.abs());
        if err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= tolerance,
        "{what}: element {} is {} but expected {} (error {:.2e} > {:.0e})",
        worst.1,
        a[worst.1],
        e[worst.1],
        worst.0,
        tolerance
    );
    // Also keep Burn's own comparison honest about the overall closeness.
    actual.assert_approx_eq::<f32>(&expected, Tolerance::rel_abs(tolerance, tolerance));
}

/// `sparse_attention` without a bias, at the default scale and without a fallback.
pub fn sparse(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
) -> Result<SparseAttentionOutput, SparseAttnError> {
    sparse_attention(q, k, v, keys, None, SparseAttentionOptions::default())
}

/// An index on `device` checked through the public constructor.
pub fn critical_keys(
    data: &TensorData,
    group_size: usize,
    key_block: usize,
    query_len: usize,
    key_len: usize,
    device: &Device,
) -> CriticalKeys {
    let ids = Tensor::<4, Int>::from_data(data.clone(), device);
    CriticalKeys::new(
        ids,
        IndexShape {
            group_size,
            key_block,
            query_len,
            key_len,
        },
    )
    .expect("valid index")
}

/// Set in the child process that runs a memory case alone.
const MEMORY_CHILD: &str = "SPARSE_ATTN_MEMORY_CHILD";

/// The peak resident memory (KiB) of `case` run alone in a child process (this test binary
/// again, running only the test `test_name`), so other tests' buffers do not count. In that
/// child, runs the case, prints its peak and returns `None`; `None` too without `/proc`.
pub fn peak_of_case_alone(test_name: &str, case: impl FnOnce()) -> Option<u64> {
    if std::env::var_os(MEMORY_CHILD).is_some() {
        case();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let peak = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        println!("peak {peak}");
        return None;
    }
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("no /proc: the memory check needs Linux");
        return None;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(MEMORY_CHILD, "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "child failed:\n{out}{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let kib = out
        .lines()
        .find_map(|l| l.split("VmHWM:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in the child's output:\n{out}"));
    Some(kib)
}
