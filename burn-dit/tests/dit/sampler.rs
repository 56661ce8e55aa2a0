//! The Euler sampler: the integration, guidance and its noise limit, stochastic sampling.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn_dit::sample::online_sparse::OnlineSparseConfig;
use burn_dit::sample::{SamplerConfig, sample_euler};
use burn_dit::{AttentionKind, ForwardContext, VideoDitInput};

use crate::common::*;

#[test]
fn euler_sampler_integrates_the_predicted_velocity() {
    // A jittered model (a fresh one predicts v = 0 and would hide a wrong sign or schedule)
    // against the Euler loop written out: x ← x + (σ' − σ)·(v_u + w·(v_c − v_u)) on the
    // shifted schedule σ = s·t / (1 + (s − 1)·t), t = 1 − i/steps.
    let device = Device::flex();
    let model = jittered(AttentionKind::Dense, &device);
    let noise = Tensor::<5>::random([1, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let cond = model.embed_labels(Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 4], [1, 2]),
        &device,
    ));
    let uncond = model.embed_labels(Tensor::zeros([1, 2], &device));
    for (guidance, shift) in [(1.0, 1.0), (3.0, 2.0)] {
        let steps = 3;
        let config = SamplerConfig {
            steps,
            guidance,
            shift,
            guidance_max_sigma: 1.0,
            stochasticity: 0.0,
            faster_cache: None,
            free_init: None,
            online_sparse: None,
        };
        let out =
            sample_euler(&model, noise.clone(), cond.clone(), uncond.clone(), config).unwrap();
        let sigma_at = |i: usize| {
            let t = 1.0 - i as f64 / steps as f64;
            shift * t / (1.0 + (shift - 1.0) * t)
        };
        let mut x = noise.clone();
        for i in 0..steps {
            let (sigma, next) = (sigma_at(i), sigma_at(i + 1));
            let s = Tensor::<1>::from_data(TensorData::new(vec![sigma as f32], [1]), &device);
            let v_c = model
                .forward(
                    VideoDitInput::new(x.clone(), s.clone(), cond.clone()),
                    &ForwardContext::whole(),
                )
                .unwrap();
            let v_u = model
                .forward(
                    VideoDitInput::new(x.clone(), s, uncond.clone()),
                    &ForwardContext::whole(),
                )
                .unwrap();
            x = x + (v_u.clone() + (v_c - v_u) * guidance) * (next - sigma);
        }
        assert!(
            max_abs_diff(x.clone(), noise.clone()) > 0.1,
            "the jittered model must move the sample"
        );
        let err = max_abs_diff(out, x);
        assert!(
            err < 1e-4,
            "guidance {guidance}, shift {shift}: error {err}"
        );
    }
    let bad = SamplerConfig {
        guidance: 1.0,
        ..plain_sampler(0)
    };
    assert_eq!(
        sample_euler(&model, noise, cond, uncond, bad)
            .unwrap_err()
            .argument(),
        "config.steps"
    );
}

#[test]
fn stochastic_sampling_renoises_the_clean_estimate() {
    // A fresh model predicts v = 0, so x̂0 = ε̂ = x. Two steps σ = 1 → 0.5 → 0: the first
    // gives 0.5·x + 0.5·(√(1 − η²)·x + η·z); the last step lands on its clean estimate. The
    // generator is shared with other tests, so check the mix by regression: the share of x
    // and the variance of the rest.
    let device = Device::flex();
    let model = micro_model(AttentionKind::Dense).init(&device);
    let noise = Tensor::<5>::random([4, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let cond = model.embed_labels(Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 4, 2, 5, 3, 6, 1, 5], [4, 2]),
        &device,
    ));
    let uncond = model.embed_labels(Tensor::zeros([4, 2], &device));
    for eta in [0.0f64, 0.6, 1.0] {
        let config = SamplerConfig {
            steps: 2,
            guidance: 1.0,
            shift: 1.0,
            guidance_max_sigma: 1.0,
            stochasticity: eta,
            faster_cache: None,
            free_init: None,
            online_sparse: None,
        };
        let out =
            sample_euler(&model, noise.clone(), cond.clone(), uncond.clone(), config).unwrap();
        let share = ((out.clone() * noise.clone()).mean() / noise.clone().square().mean())
            .into_scalar::<f32>() as f64;
        let rest = (out - noise.clone() * share)
            .square()
            .mean()
            .into_scalar::<f32>() as f64;
        let (want_share, want_rest) = (0.5 + 0.5 * (1.0 - eta * eta).sqrt(), (0.5 * eta).powi(2));
        assert!(
            (share - want_share).abs() < 0.02,
            "η = {eta}: share of x {share}, want {want_share}"
        );
        assert!(
            (rest - want_rest).abs() < 0.1 * want_rest + 1e-6,
            "η = {eta}: fresh-noise variance {rest}, want {want_rest}"
        );
    }
    let bad = SamplerConfig {
        steps: 2,
        guidance: 1.0,
        shift: 1.0,
        guidance_max_sigma: 1.0,
        stochasticity: 1.5,
        faster_cache: None,
        free_init: None,
        online_sparse: None,
    };
    assert_eq!(
        sample_euler(&model, noise, cond, uncond, bad)
            .unwrap_err()
            .argument(),
        "config.stochasticity"
    );
}

#[test]
fn guidance_acts_only_below_its_noise_limit() {
    let device = Device::flex();
    let model = jittered(AttentionKind::Dense, &device);
    let noise = Tensor::<5>::random([2, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let cond = model.embed_labels(Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 4, 2, 5], [2, 2]),
        &device,
    ));
    let uncond = model.embed_labels(Tensor::zeros([2, 2], &device));
    // Four steps start at σ = 1, 0.75, 0.5, 0.25 (shift 1).
    let run = |guidance: f64, guidance_max_sigma: f64| {
        let config = SamplerConfig {
            steps: 4,
            guidance,
            shift: 1.0,
            guidance_max_sigma,
            stochasticity: 0.0,
            faster_cache: None,
            free_init: None,
            online_sparse: None,
        };
        sample_euler(&model, noise.clone(), cond.clone(), uncond.clone(), config)
    };
    let unguided = run(1.0, 1.0).unwrap();
    let always = run(4.0, 1.0).unwrap();
    let late = run(4.0, 0.5).unwrap();
    assert_eq!(
        max_abs_diff(run(4.0, 0.1).unwrap(), unguided.clone()),
        0.0,
        "no step starts at σ ≤ 0.1"
    );
    assert!(
        max_abs_diff(always.clone(), unguided.clone()) > 1e-3,
        "guidance must change a jittered model's samples"
    );
    assert!(
        max_abs_diff(late.clone(), unguided) > 1e-3 && max_abs_diff(late, always) > 1e-3,
        "guiding the last two steps differs from both"
    );
    assert_eq!(
        run(4.0, -0.5).unwrap_err().argument(),
        "config.guidance_max_sigma"
    );
}

#[test]
fn sampler_configs_written_before_the_later_options_load_with_their_defaults() {
    // A run's config saved before guidance limits, stochasticity and the accelerators.
    let config = burn_dit::train::TrainConfig::tiny(micro_model(AttentionKind::Dense));
    let mut json = serde_json::to_value(&config).unwrap();
    json["sampler"] = serde_json::json!({"steps": 20, "guidance": 5.0, "shift": 3.0});
    let old: burn_dit::train::TrainConfig = serde_json::from_value(json).unwrap();
    let want = SamplerConfig {
        steps: 20,
        guidance: 5.0,
        ..SamplerConfig::default()
    };
    assert_eq!(old.sampler, want);
    assert_eq!((want.guidance_max_sigma, want.stochasticity), (1.0, 0.0));
    assert!(want.faster_cache.is_none() && want.free_init.is_none());
    // What is written now reads back the same.
    let full = want.with_online_sparse(Some(OnlineSparseConfig::new(0.8)));
    let json = serde_json::to_string(&full).unwrap();
    assert_eq!(serde_json::from_str::<SamplerConfig>(&json).unwrap(), full);
}
