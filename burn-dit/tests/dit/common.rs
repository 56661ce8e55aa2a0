#![allow(dead_code)]

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Tensor};
use burn_dit::data::{ClipShape, SplitMix};
use burn_dit::sample::SamplerConfig;
use burn_dit::train::{StepLog, TrainConfig, Trainer};
use burn_dit::{AttentionKind, DsvPolicy, VideoDit, VideoDitConfig};

/// A model small enough for debug-build tests: 4×16×16 clips → 64 tokens of width 32, with
/// the tiny preset's frame and temporal convolutions in the MLP.
pub fn micro_model(attention: AttentionKind) -> VideoDitConfig {
    VideoDitConfig::new(3, [1, 4, 4], 32, 2, 2)
        .with_cond_dim(16)
        .with_mlp_conv(true)
        .with_mlp_time_conv(true)
        .with_attention(attention)
}

pub fn micro_dsv() -> AttentionKind {
    AttentionKind::Dsv(
        DsvPolicy::new()
            .with_min_sparse_len(0)
            .with_sample_stride(8)
            .with_profile_every(2)
            .with_query_cube([1, 2, 2]),
    )
}

pub fn micro_train(attention: AttentionKind) -> TrainConfig {
    let mut c = TrainConfig::tiny(micro_model(attention));
    c.clip = ClipShape {
        frames: 4,
        height: 16,
        width: 16,
    };
    c.dataset_size = 64;
    c.batch_size = 4;
    c.steps = 4;
    c.warmup_steps = 1;
    c.sampler.steps = 2;
    c
}

/// Asserts that two runs logged the same steps: losses within `tolerance` (relative, from 1
/// up) and predictor losses recorded on the same steps.
pub fn assert_same_steps(a: &[StepLog], b: &[StepLog], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: steps logged");
    for (a, b) in a.iter().zip(b) {
        assert!(
            (a.loss - b.loss).abs() < tolerance * a.loss.abs().max(1.0),
            "{what}, step {}: loss {} against {}",
            a.step,
            b.loss,
            a.loss
        );
        assert_eq!(
            a.predictor_loss.is_some(),
            b.predictor_loss.is_some(),
            "{what}, step {}",
            a.step
        );
    }
}

/// The largest `|a_i − b_i|` of two weight lists.
pub fn worst_gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// Adds noise to every weight: a fresh model's zero head and gates would hide any error.
/// Feature-aggregation gates stay zero (and draw no noise), so a model with them jitters
/// like the same model without. Everything comes from a host generator, not the device's,
/// which tests running in parallel share: a weight Burn drew at random is replaced by noise
/// alone; one Burn built exactly (zeros, ones, identity kernels) keeps its value under the
/// noise.
struct Jitter {
    path: Vec<String>,
    rng: SplitMix,
}

impl ModuleMapper for Jitter {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self
            .path
            .last()
            .is_some_and(|name| name == "aggregation_gate")
        {
            return param;
        }
        param.map(|w| {
            let exact = w
                .to_data()
                .convert::<f32>()
                .iter::<f32>()
                .all(|x| x == 0.0 || x == 1.0);
            let noise = self.rng.normal_tensor(w.dims(), &w.device()) * 0.2;
            match exact {
                true => w + noise,
                false => noise,
            }
        })
    }
}

/// A deterministic Euler sampler of `steps` steps with guidance 3 and no accelerators.
pub fn plain_sampler(steps: usize) -> SamplerConfig {
    SamplerConfig {
        steps,
        guidance: 3.0,
        shift: 1.0,
        guidance_max_sigma: 1.0,
        stochasticity: 0.0,
        faster_cache: None,
        free_init: None,
        online_sparse: None,
    }
}

pub fn jittered(attention: AttentionKind, device: &Device) -> VideoDit {
    jittered_model(micro_model(attention), device)
}

pub fn jittered_model(config: VideoDitConfig, device: &Device) -> VideoDit {
    config.init(device).map(&mut Jitter {
        path: Vec::new(),
        rng: SplitMix(11),
    })
}

/// Every weight of the trainer's model, flattened.
pub fn params(trainer: &Trainer) -> Vec<f32> {
    params_of(trainer.model())
}

pub fn params_of(model: &VideoDit) -> Vec<f32> {
    let mut out = Vec::new();
    struct Collect<'a>(&'a mut Vec<f32>);
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            self.0.extend(values(param.val()));
        }
    }
    model.visit(&mut Collect(&mut out));
    out
}

/// A tensor's values as f32.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Sets every feature-aggregation gate to random values (a uniform gate would hardly show:
/// the aggregate is close to the residual stream, and the norm removes its scale).
#[derive(Default)]
pub struct OpenGates(Vec<String>);

impl ModuleMapper for OpenGates {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.0.last().is_some_and(|name| name == "aggregation_gate") {
            true => param.map(|w| w.random_like(Distribution::Normal(0.0, 1.0))),
            false => param,
        }
    }
}

/// A fresh temporary folder, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names in `dir`, sorted.
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
