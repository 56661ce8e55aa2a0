use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn_dit::data::SplitMix;
use burn_dit::flow::{
    CLEAN_PREDICTION_MIN_SIGMA, SigmaSampling, add_noise, shift_sigma, velocity_from_clean,
    velocity_target,
};
use burn_dit::sample::{SamplerConfig, sample_euler};
use burn_dit::{AttentionKind, Prediction, Rope3d, patchify, rope_split, unpatchify};
use burn_sparse_attn::dsv::DsvHost;

use crate::common::*;
use burn_dit::{BlockFeatures, ForwardContext, VideoDitInput};

#[test]
fn patches_round_trip_exactly() {
    let device = Device::flex();
    let video = Tensor::<5>::random([2, 3, 4, 8, 12], Distribution::Normal(0.0, 1.0), &device);
    let tokens = patchify(video.clone(), [2, 4, 4]);
    assert_eq!(tokens.dims(), [2, 2 * 2 * 3, 3 * 2 * 4 * 4]);
    assert_eq!(
        max_abs_diff(
            unpatchify(tokens.clone(), 3, [2, 4, 4], [2, 2, 3]),
            video.clone()
        ),
        0.0
    );
    // Token 1 is patch (t=0, y=0, x=1): frame-major order.
    let expected = video.slice([0..1, 0..1, 0..2, 0..4, 4..8]).reshape([32]);
    let got = tokens.slice([0..1, 1..2, 0..32]).reshape([32]);
    assert_eq!(max_abs_diff(got, expected), 0.0);
}

#[test]
fn rope_is_relative_and_keeps_norms() {
    let device = Device::flex();
    assert_eq!(rope_split(32), [12, 10, 10]);
    let grid = [3, 2, 2];
    let q = Tensor::<4>::random([1, 1, 12, 32], Distribution::Normal(0.0, 1.0), &device);
    let k = Tensor::<4>::random([1, 1, 12, 32], Distribution::Normal(0.0, 1.0), &device);
    let at = |offset| Rope3d::new(32, grid, offset, 1e4, &device);
    let scores = |r: &Rope3d| {
        r.apply(q.clone())
            .matmul(r.apply(k.clone()).swap_dims(2, 3))
    };
    // Shifting every frame by the same offset leaves all dot products unchanged...
    assert!(max_abs_diff(scores(&at(0)), scores(&at(17))) < 1e-3);
    // ...rotations keep lengths...
    let norms = |x: Tensor<4>| x.square().sum_dim(3);
    assert!(max_abs_diff(norms(at(5).apply(q.clone())), norms(q.clone())) < 1e-3);
    // ...and positions do matter.
    assert!(max_abs_diff(scores(&at(0)), q.clone().matmul(k.clone().swap_dims(2, 3))) > 1e-2);
    // The first time pair turns by the frame index (frequency 1): (1, 0) becomes (cos t, sin t)
    // at frame t, and (0, 1) becomes (−sin t, cos t).
    for (unit, expected) in [
        (0, [|t: f32| t.cos(), |t: f32| t.sin()]),
        (1, [|t: f32| -t.sin(), |t: f32| t.cos()]),
    ] {
        let mut x = vec![0f32; 12 * 32];
        (0..12).for_each(|i| x[i * 32 + unit] = 1.0);
        let out = at(0)
            .apply(Tensor::from_data(
                TensorData::new(x, [1, 1, 12, 32]),
                &device,
            ))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for token in 0..12 {
            let t = (token / 4) as f32;
            assert!(
                (out[token * 32] - expected[0](t)).abs() < 1e-6
                    && (out[token * 32 + 1] - expected[1](t)).abs() < 1e-6,
                "token {token}, unit {unit}"
            );
            assert!(
                out[token * 32 + 2..token * 32 + 32]
                    .iter()
                    .all(|v| v.abs() < 1e-6),
                "other dims stay zero"
            );
        }
    }
}

#[test]
fn fresh_model_is_zero_and_validates_inputs() {
    let device = Device::flex();
    for attention in [AttentionKind::Dense, micro_dsv()] {
        let model = micro_model(attention).init(&device);
        let x = Tensor::<5>::random([2, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.8], [2]), &device);
        let cond = model.embed_labels(Tensor::<2, Int>::from_data(
            TensorData::new(vec![1i64, 4, 2, 5], [2, 2]),
            &device,
        ));
        // Zero-initialised head: a fresh model predicts exactly zero velocity.
        let v = model
            .forward(
                VideoDitInput::new(x.clone(), sigma.clone(), cond.clone()),
                &ForwardContext::whole(),
            )
            .unwrap();
        assert_eq!(v.dims(), [2, 3, 4, 16, 16]);
        assert_eq!(v.abs().max().into_scalar::<f32>(), 0.0);
        let err = model
            .forward(
                VideoDitInput::new(
                    Tensor::zeros([2, 3, 4, 16, 15], &device),
                    sigma.clone(),
                    cond.clone(),
                ),
                &ForwardContext::whole(),
            )
            .unwrap_err();
        assert_eq!(err.argument(), "x");
        assert_eq!(
            model
                .forward(
                    VideoDitInput::new(
                        Tensor::zeros([2, 4, 4, 16, 16], &device),
                        sigma.clone(),
                        cond.clone()
                    ),
                    &ForwardContext::whole()
                )
                .unwrap_err()
                .argument(),
            "x"
        );
        assert_eq!(
            model
                .forward(
                    VideoDitInput::new(x.clone(), Tensor::zeros([3], &device), cond.clone()),
                    &ForwardContext::whole()
                )
                .unwrap_err()
                .argument(),
            "sigma"
        );
        assert_eq!(
            model
                .forward(
                    VideoDitInput::new(x, sigma, Tensor::zeros([2, 2, 7], &device)),
                    &ForwardContext::whole()
                )
                .unwrap_err()
                .argument(),
            "cond"
        );
    }
    // The pooled conditioning is one `cond_dim → d` projection into the time embedding.
    let pooled = micro_model(AttentionKind::Dense).init(&device).num_params();
    let plain = micro_model(AttentionKind::Dense)
        .with_pooled_cond(false)
        .init(&device)
        .num_params();
    assert_eq!(pooled - plain, 16 * 32 + 32);
    // The frame convolution is one depthwise 3×3 filter (and bias) per channel per block.
    let without_conv = micro_model(AttentionKind::Dense)
        .with_mlp_conv(false)
        .init(&device)
        .num_params();
    assert_eq!(pooled - without_conv, 2 * (32 * 9 + 32));
    // The temporal convolution is three taps per channel per block.
    let without_time_conv = micro_model(AttentionKind::Dense)
        .with_mlp_time_conv(false)
        .init(&device)
        .num_params();
    assert_eq!(pooled - without_time_conv, 2 * 3 * 32);
    // The output convolution is one 3×3 filter per pair of video channels, and a bias each.
    let with_head_conv = micro_model(AttentionKind::Dense)
        .with_head_conv(true)
        .init(&device)
        .num_params();
    assert_eq!(with_head_conv - pooled, 3 * 3 * 9 + 3);
    assert_eq!(micro_model(micro_dsv()).init(&device).dsv_layers().len(), 2);
    assert_eq!(
        micro_model(AttentionKind::Dense)
            .init(&device)
            .dsv_layers()
            .len(),
        0
    );
}

/// Adds noise to the weight matrices only, leaving convolutions, biases and norms as built
/// (but initialised now: Burn draws lazily initialised parameters at first use).
struct JitterMatrices;

impl ModuleMapper for JitterMatrices {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|w| {
            if D != 2 {
                return w;
            }
            let noise = Tensor::random(w.shape(), Distribution::Normal(0.0, 0.2), &w.device());
            w + noise
        })
    }
}

/// Every float parameter of a model by its path, to copy into another model.
#[derive(Default)]
struct ParamsByPath {
    path: Vec<String>,
    params: HashMap<String, TensorData>,
}

impl ModuleVisitor for ParamsByPath {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params
            .insert(self.path.join("."), param.val().into_data());
    }
}

impl ModuleMapper for ParamsByPath {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.params.get(&self.path.join(".")) {
            Some(data) => param.map(|w| {
                assert_eq!(data.shape(), &w.shape(), "{}", self.path.join("."));
                Tensor::from_data(data.clone(), &w.device())
            }),
            None => param,
        }
    }
}

#[test]
fn output_convolution_starts_as_the_identity() {
    let device = Device::flex();
    let without = micro_model(AttentionKind::Dense)
        .init(&device)
        .map(&mut JitterMatrices);
    // The same weights (copied: other tests draw from the device's generator in parallel)
    // plus the output convolution as built.
    let mut weights = ParamsByPath::default();
    without.visit(&mut weights);
    let with = micro_model(AttentionKind::Dense)
        .with_head_conv(true)
        .init(&device)
        .map(&mut weights);
    let x = Tensor::<5>::random([2, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.8], [2]), &device);
    let cond = without.embed_labels(Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 4, 2, 5], [2, 2]),
        &device,
    ));
    let v = without
        .forward(
            VideoDitInput::new(x.clone(), sigma.clone(), cond.clone()),
            &ForwardContext::whole(),
        )
        .unwrap();
    assert!(
        v.clone().abs().max().into_scalar::<f32>() > 1e-2,
        "the jittered head must predict something"
    );
    let err = max_abs_diff(
        with.forward(VideoDitInput::new(x, sigma, cond), &ForwardContext::whole())
            .unwrap(),
        v.clone(),
    );
    assert!(
        err < 1e-5,
        "{err} of {}",
        v.abs().max().into_scalar::<f32>()
    );
}

#[test]
fn flow_matching_conventions() {
    let device = Device::flex();
    let x0 = Tensor::<5>::random([2, 3, 2, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let eps = Tensor::<5>::random([2, 3, 2, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let sigma = |s: f32| Tensor::<1>::from_data(TensorData::new(vec![s; 2], [2]), &device);
    assert!(max_abs_diff(add_noise(x0.clone(), eps.clone(), sigma(0.0)), x0.clone()) < 1e-6);
    assert!(max_abs_diff(add_noise(x0.clone(), eps.clone(), sigma(1.0)), eps.clone()) < 1e-6);
    // d x_σ / dσ = v: a finite difference along σ equals the target.
    let slope = (add_noise(x0.clone(), eps.clone(), sigma(0.6))
        - add_noise(x0.clone(), eps.clone(), sigma(0.4)))
        / 0.2;
    assert!(max_abs_diff(slope, velocity_target(x0, eps)) < 1e-4);
    assert_eq!((shift_sigma(0.0, 3.0), shift_sigma(1.0, 3.0)), (0.0, 1.0));
    assert!(shift_sigma(0.5, 3.0) > 0.5 && shift_sigma(0.5, 1.0) == 0.5);
    // Shifted training noise levels: in [0, 1], median at the shifted median of U(0, 1).
    let mut rng = SplitMix(11);
    let mut draws: Vec<f32> = SigmaSampling::ShiftedUniform { shift: 2.0 }
        .sample(4001, &mut rng, &device)
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap();
    draws.sort_by(f32::total_cmp);
    assert!(draws[0] >= 0.0 && draws[4000] <= 1.0);
    assert!(
        (draws[2000] as f64 - shift_sigma(0.5, 2.0)).abs() < 0.03,
        "median {}",
        draws[2000]
    );
}

#[test]
fn clean_prediction_returns_the_velocity_towards_its_estimate() {
    let device = Device::flex();
    let x0 = Tensor::<5>::random([3, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let eps = Tensor::<5>::random([3, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let levels = [0.01f32, 0.3, 0.8];
    let sigma = Tensor::<1>::from_data(TensorData::new(levels.to_vec(), [3]), &device);
    let x = add_noise(x0.clone(), eps.clone(), sigma.clone());
    // The exact clean video gives the exact velocity wherever σ ≥ σ_min...
    let v = velocity_from_clean(x.clone(), x0.clone(), sigma.clone());
    assert!(
        max_abs_diff(
            v.clone().narrow(0, 1, 2),
            velocity_target(x0.clone(), eps.clone()).narrow(0, 1, 2)
        ) < 1e-4
    );
    // ...and below it divides by σ_min: finite, a fraction σ/σ_min of the velocity.
    let floor = (0.01 / CLEAN_PREDICTION_MIN_SIGMA) as f32;
    assert!(
        max_abs_diff(
            v.narrow(0, 0, 1),
            velocity_target(x0, eps).narrow(0, 0, 1) * floor
        ) < 1e-4
    );

    // A clean-video model is the velocity model's network with that conversion on its output.
    let cond_ids =
        Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 4, 2, 5, 3, 6], [3, 2]), &device);
    for attention in [
        AttentionKind::Dense,
        AttentionKind::DualScope(burn_dit::DualScopeConfig::new().with_window(1)),
    ] {
        let velocity = jittered(attention.clone(), &device);
        let clean = micro_model(attention)
            .with_prediction(Prediction::Clean)
            .init(&device)
            .load_record(velocity.clone().into_record());
        let cond = velocity.embed_labels(cond_ids.clone());
        let head = velocity
            .forward(
                VideoDitInput::new(x.clone(), sigma.clone(), cond.clone()),
                &ForwardContext::whole(),
            )
            .unwrap();
        let v = clean
            .forward(
                VideoDitInput::new(x.clone(), sigma.clone(), cond),
                &ForwardContext::whole(),
            )
            .unwrap();
        assert!(max_abs_diff(v, velocity_from_clean(x.clone(), head, sigma.clone())) < 1e-4);
    }
}

#[test]
fn self_conditioning_reads_the_previous_estimate() {
    let device = Device::flex();
    let config = micro_model(AttentionKind::Dense).with_self_condition(true);
    // The patch embedding reads a second patch, the estimate's, beside the noisy input.
    assert_eq!(
        config.init(&device).num_params()
            - micro_model(AttentionKind::Dense).init(&device).num_params(),
        3 * 4 * 4 * 32
    );
    let model = jittered_model(config, &device);
    let x = Tensor::<5>::random([2, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let estimate = Tensor::<5>::random([2, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.9f32, 0.4], [2]), &device);
    let cond = model.embed_labels(Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 4, 2, 5], [2, 2]),
        &device,
    ));
    // No estimate reads as zeros; an estimate changes the prediction.
    let plain = model
        .forward(
            VideoDitInput::new(x.clone(), sigma.clone(), cond.clone()),
            &ForwardContext::whole(),
        )
        .unwrap();
    assert_eq!(
        max_abs_diff(
            plain.clone(),
            model
                .forward(
                    VideoDitInput::new(x.clone(), sigma.clone(), cond.clone())
                        .with_estimate(Some(x.zeros_like())),
                    &ForwardContext::whole()
                )
                .unwrap()
        ),
        0.0
    );
    assert!(
        max_abs_diff(
            plain,
            model
                .forward(
                    VideoDitInput::new(x.clone(), sigma.clone(), cond.clone())
                        .with_estimate(Some(estimate.clone())),
                    &ForwardContext::whole()
                )
                .unwrap()
        ) > 1e-3
    );
    let short = estimate.clone().narrow(2, 0, 2);
    assert_eq!(
        model
            .forward(
                VideoDitInput::new(x.clone(), sigma.clone(), cond.clone())
                    .with_estimate(Some(short)),
                &ForwardContext::whole()
            )
            .unwrap_err()
            .argument(),
        "estimate"
    );
    let without = jittered(AttentionKind::Dense, &device);
    assert_eq!(
        without
            .forward(
                VideoDitInput::new(x, sigma, cond.clone()).with_estimate(Some(estimate)),
                &ForwardContext::whole()
            )
            .unwrap_err()
            .argument(),
        "estimate"
    );

    // The sampler hands each step's clean estimate `x − σ·v` to the next, per guidance branch
    // (the conditional one's to both after an unguided step): a loop written out with
    // `VideoDitInput::with_estimate` gives the same samples.
    let noise = Tensor::<5>::random([2, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let uncond = model.embed_labels(Tensor::zeros([2, 2], &device));
    for (guidance, guidance_max_sigma) in [(1.0, 1.0), (3.0, 1.0), (3.0, 0.5)] {
        let config = SamplerConfig {
            steps: 3,
            guidance,
            shift: 1.0,
            guidance_max_sigma,
            stochasticity: 0.0,
            faster_cache: None,
            free_init: None,
            online_sparse: None,
        };
        let sampled =
            sample_euler(&model, noise.clone(), cond.clone(), uncond.clone(), config).unwrap();
        let (mut x, mut cond_estimate, mut uncond_estimate) =
            (noise.clone(), None::<Tensor<5>>, None::<Tensor<5>>);
        for i in 0..3 {
            let (sigma, next) = (1.0 - i as f64 / 3.0, 1.0 - (i + 1) as f64 / 3.0);
            let s = Tensor::<1>::from_data(TensorData::new(vec![sigma as f32; 2], [2]), &device);
            let (given_cond, given_uncond) = (cond_estimate.take(), uncond_estimate.take());
            let v_cond = model
                .forward(
                    VideoDitInput::new(x.clone(), s.clone(), cond.clone())
                        .with_estimate(given_cond.clone()),
                    &ForwardContext::whole(),
                )
                .unwrap();
            cond_estimate = Some(x.clone() - v_cond.clone() * sigma);
            let v = if guidance > 1.0 && sigma <= guidance_max_sigma + 1e-9 {
                let v_uncond = model
                    .forward(
                        VideoDitInput::new(x.clone(), s, uncond.clone())
                            .with_estimate(given_uncond.or(given_cond)),
                        &ForwardContext::whole(),
                    )
                    .unwrap();
                uncond_estimate = Some(x.clone() - v_uncond.clone() * sigma);
                v_uncond.clone() + (v_cond - v_uncond) * guidance
            } else {
                v_cond
            };
            x = x + v * (next - sigma);
        }
        let err = max_abs_diff(sampled, x);
        assert!(
            err < 1e-4,
            "guidance {guidance} below σ {guidance_max_sigma}: {err}"
        );
    }
}

/// Zeroes every weight whose path starts with one of `prefixes` (counting them).
struct ZeroPaths<'a> {
    prefixes: &'a [&'a str],
    path: Vec<String>,
    zeroed: usize,
}

impl ModuleMapper for ZeroPaths<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        if self.prefixes.iter().any(|p| path.starts_with(p)) {
            self.zeroed += 1;
            return param.map(|w| w.zeros_like());
        }
        param
    }
}

fn zeroed(model: &burn_dit::VideoDit, prefixes: &[&str]) -> burn_dit::VideoDit {
    let mut mapper = ZeroPaths {
        prefixes,
        path: Vec::new(),
        zeroed: 0,
    };
    let model = model.clone().map(&mut mapper);
    assert!(mapper.zeroed > 0, "no weight under {prefixes:?}");
    model
}

/// What the first block adds to its input, `[B, S, d]`.
fn block_delta(model: &burn_dit::VideoDit, device: &Device) -> Tensor<3> {
    let x = SplitMix(3).normal_tensor([2, 3, 4, 16, 16], device);
    let sigma = Tensor::<1>::from_floats([0.3, 0.8], device);
    let cond = model.embed_labels(Tensor::from_ints([[1, 4], [2, 5]], device));
    let record = BlockFeatures::new();
    let ctx = ForwardContext::whole().with_features(&record);
    model
        .forward(VideoDitInput::new(x, sigma, cond), &ctx)
        .unwrap();
    let mut features = record.into_levels();
    assert_eq!(features.len(), 2);
    let after = features.pop().unwrap();
    after - features.pop().unwrap()
}

#[test]
fn the_parallel_block_sums_branches_that_read_the_same_input() {
    let device = Device::flex();
    let (attn, cross, mlp) = (
        "blocks.0.attn.out",
        "blocks.0.cross.out",
        "blocks.0.mlp_out",
    );
    // With one branch left at a time, the parallel block's deltas add up to its whole delta:
    // every branch reads the block's input and they share one residual. The sequential
    // block's branches read each other's outputs, so its deltas do not add up.
    for (parallel, adds_up) in [(true, true), (false, false)] {
        let mut config = micro_model(micro_dsv()).with_parallel_block(parallel);
        config.depth = 1;
        let model = jittered_model(config, &device).valid();
        let whole = block_delta(&model, &device);
        let parts = [[cross, mlp], [attn, mlp], [attn, cross]]
            .map(|off| block_delta(&zeroed(&model, &off), &device))
            .into_iter()
            .reduce(|a, b| a + b)
            .unwrap();
        let gap = max_abs_diff(whole.clone(), parts);
        let scale = whole.abs().max().into_scalar::<f32>();
        assert!(scale > 0.1, "the block must change its input");
        assert_eq!(
            gap < 1e-4 * scale.max(1.0),
            adds_up,
            "parallel {parallel}: gap {gap}"
        );
    }
}

/// Every weight but the aggregation gates, in visiting order.
struct CollectWeights(Vec<String>, Vec<TensorData>);

impl burn::module::ModuleVisitor for CollectWeights {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.0.last().is_none_or(|name| name != "aggregation_gate") {
            self.1.push(param.val().into_data());
        }
    }
}

/// Replaces every weight by the next of a sequence.
struct CopyWeights<'a>(&'a mut dyn Iterator<Item = TensorData>);

impl ModuleMapper for CopyWeights<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let data = self.0.next().expect("as many weights");
        param.map(|w| Tensor::from_data(data, &w.device()))
    }
}

#[test]
fn feature_aggregation_starts_as_the_plain_model_and_feeds_later_blocks() {
    let device = Device::flex();
    let features = |model: &burn_dit::VideoDit| {
        let x = SplitMix(5).normal_tensor([1, 3, 4, 16, 16], &device);
        let sigma = Tensor::<1>::from_floats([0.5], &device);
        let cond = model.embed_labels(Tensor::from_ints([[1, 4]], &device));
        let record = BlockFeatures::new();
        let ctx = ForwardContext::whole().with_features(&record);
        model
            .forward(VideoDitInput::new(x, sigma, cond), &ctx)
            .unwrap();
        record.into_levels()
    };
    // One jittered model with zero gates, and the plain model given the same weights (tests
    // share the device's generator, so a second seeded construction could differ).
    let config = micro_model(micro_dsv()).with_feature_aggregation(true);
    let fresh = jittered_model(config, &device).valid();
    let mut weights = CollectWeights(Vec::new(), Vec::new());
    fresh.visit(&mut weights);
    let mut copy = weights.1.into_iter();
    let plain = micro_model(micro_dsv())
        .init(&device)
        .valid()
        .map(&mut CopyWeights(&mut copy));
    assert!(copy.next().is_none(), "every weight copied");
    for (i, (a, b)) in features(&plain)
        .into_iter()
        .zip(features(&fresh))
        .enumerate()
    {
        let gap = max_abs_diff(a, b);
        assert!(
            gap < 1e-6,
            "zero gates must leave the model as it was: feature {i} off by {gap}"
        );
    }
    let aggregating = fresh.clone().map(&mut OpenGates::default());
    // Open gates: block 0 has nothing before it, block 1 reads block 0's output.
    let opened = features(&aggregating);
    let closed = features(&fresh);
    assert!(max_abs_diff(opened[1].clone(), closed[1].clone()) < 1e-6);
    assert!(max_abs_diff(opened[2].clone(), closed[2].clone()) > 1e-4);
}

#[test]
fn configs_written_before_the_block_options_load_without_them() {
    let config = burn_dit::train::TrainConfig::tiny(micro_model(AttentionKind::Dense));
    let mut json = serde_json::to_value(&config).unwrap();
    let model = json["model"].as_object_mut().unwrap();
    assert!(model.remove("parallel_block").is_some());
    assert!(model.remove("feature_aggregation").is_some());
    let old: burn_dit::train::TrainConfig = serde_json::from_value(json).unwrap();
    assert!(!old.model.parallel_block && !old.model.feature_aggregation);
}
