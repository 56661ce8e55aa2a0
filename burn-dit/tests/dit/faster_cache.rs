use std::sync::Mutex;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_ctx_parallel::Communicator;
use burn_dit::sample::SamplingState;
use burn_dit::sample::faster_cache::{FasterCacheConfig, extrapolate, split_spatial_frequencies};
use burn_dit::sample::{SamplerConfig, sample_euler, sample_euler_clips, sample_with_velocity};
use burn_dit::{AttentionKind, ClipGroup, ClipLayout, DualScopeConfig};
use burn_sparse_attn::dsv::{DsvHost, DsvStage};

use crate::common::*;
use burn_dit::{ForwardContext, VideoDitInput};

fn sampler(steps: usize, cache: Option<FasterCacheConfig>) -> SamplerConfig {
    SamplerConfig {
        faster_cache: cache,
        ..plain_sampler(steps)
    }
}

#[test]
fn extrapolation_continues_a_linear_sequence() {
    let device = Device::flex();
    let at = |k: f32| Tensor::<1>::from_floats([1.0 + 2.0 * k, -3.0 * k], &device);
    // F_k = a + b·k: weight 1 gives F_3 from F_2 and F_1 exactly, weight 0 repeats F_2, and
    // weight ½ lands half way.
    assert!(max_abs_diff(extrapolate(at(2.0), at(1.0), 1.0), at(3.0)) < 1e-6);
    assert!(max_abs_diff(extrapolate(at(2.0), at(1.0), 0.0), at(2.0)) < 1e-6);
    assert!(max_abs_diff(extrapolate(at(2.0), at(1.0), 0.5), at(2.5)) < 1e-6);
}

#[test]
fn the_reuse_schedules_follow_the_config() {
    let c = FasterCacheConfig::default();
    // 20 steps: attention window [6, 18), every other step from its second on.
    let reused: Vec<usize> = (0..20).filter(|&i| c.reuses_attention(i, 20)).collect();
    assert_eq!(reused, [7, 9, 11, 13, 15, 17]);
    // Both guidance branches before step 6, then every 5th step.
    let full: Vec<usize> = (0..20).filter(|&i| c.runs_both_branches(i, 20)).collect();
    assert_eq!(full, [0, 1, 2, 3, 4, 5, 6, 11, 16]);
    assert_eq!(c.weight(5, 20), 0.25);
    let (low, high) = c.band_scales(5, 20);
    assert!((low - 1.075).abs() < 1e-12 && (high - 1.025).abs() < 1e-12);
    // Off switches.
    let off = FasterCacheConfig {
        attention_window: [0.5, 0.5],
        cfg_interval: 1,
        ..c
    };
    assert!((0..20).all(|i| !off.reuses_attention(i, 20) && off.runs_both_branches(i, 20)));
}

#[test]
fn bad_faster_cache_settings_are_named() {
    let good = FasterCacheConfig::default();
    for (bad, field) in [
        (
            FasterCacheConfig {
                attention_window: [0.6, 0.4],
                ..good
            },
            "attention_window",
        ),
        (
            FasterCacheConfig {
                attention_window: [0.2, 1.5],
                ..good
            },
            "attention_window",
        ),
        (
            FasterCacheConfig {
                cfg_interval: 0,
                ..good
            },
            "cfg_interval",
        ),
        (
            FasterCacheConfig {
                cfg_start: -0.1,
                ..good
            },
            "cfg_start",
        ),
        (
            FasterCacheConfig {
                low_radius: 0.0,
                ..good
            },
            "low_radius",
        ),
        (
            FasterCacheConfig {
                low_radius: 1.5,
                ..good
            },
            "low_radius",
        ),
        (
            FasterCacheConfig {
                band_boost: f64::NAN,
                ..good
            },
            "band_boost",
        ),
    ] {
        let err = sampler(4, Some(bad)).check("sample_euler").unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(sampler(4, Some(good)).check("sample_euler").is_ok());
}

/// `[1, 1, 1, H, W]` frame of `f(y, x)`.
fn frame(h: usize, w: usize, f: impl Fn(usize, usize) -> f32, device: &Device) -> Tensor<5> {
    let values: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (y, x)))
        .map(|(y, x)| f(y, x))
        .collect();
    Tensor::<2>::from_data(TensorData::new(values, [h, w]), device).reshape([1, 1, 1, h, w])
}

#[test]
fn the_frequency_split_passes_low_and_stops_high_frequencies() {
    let device = Device::flex();
    let (h, w) = (16, 32);
    let tau = std::f32::consts::TAU;
    // Radius 0.25·min(H, W) = 4: frequency (0, 3) and (3, 2) (|k| = 3.6) pass, (0, 5),
    // (4, 4) and the checkerboard (8, 16) are stopped.
    let wave = |ky: f32, kx: f32| {
        frame(
            h,
            w,
            move |y, x| (tau * (ky * y as f32 / h as f32 + kx * x as f32 / w as f32)).cos(),
            &device,
        )
    };
    let constant = frame(h, w, |_, _| 0.7, &device);
    for (name, x, passes) in [
        ("constant", constant, true),
        ("(0, 3)", wave(0.0, 3.0), true),
        ("(3, 2)", wave(3.0, 2.0), true),
        ("(0, 5)", wave(0.0, 5.0), false),
        ("(4, 4)", wave(4.0, 4.0), false),
        ("checkerboard", wave(8.0, 16.0), false),
    ] {
        let (low, high) = split_spatial_frequencies(x.clone(), 0.25).unwrap();
        let (kept, stopped) = if passes { (low, high) } else { (high, low) };
        assert!(max_abs_diff(kept, x.clone()) < 1e-4, "{name}");
        assert!(stopped.abs().max().into_scalar::<f32>() < 1e-4, "{name}");
    }
    // A mixture splits into its parts, batch and channels alike.
    let mixed = Tensor::cat(
        vec![wave(0.0, 3.0) + wave(4.0, 4.0), wave(1.0, 1.0) * 2.0],
        1,
    );
    let (low, high) = split_spatial_frequencies(mixed.clone(), 0.25).unwrap();
    let want_low = Tensor::cat(vec![wave(0.0, 3.0), wave(1.0, 1.0) * 2.0], 1);
    assert!(max_abs_diff(low.clone(), want_low) < 1e-4);
    assert!(max_abs_diff(low + high, mixed) < 1e-5);
    let err = split_spatial_frequencies(Tensor::zeros([1, 1, 1, 12, 16], &device), 0.2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("powers of two") && err.contains("x"), "{err}");
}

#[test]
fn cfg_cache_runs_the_conditional_branch_alone_and_rebuilds_the_other() {
    // A velocity model that answers A for conditioned rows and B for null ones (constant
    // fields: all low frequency), recording each call's batch.
    let device = Device::flex();
    let (a, b) = (0.5f32, -1.5f32);
    let calls = Mutex::new(Vec::new());
    let velocity =
        |x: Vec<Tensor<5>>, _sigma: f64, cond: Vec<Tensor<3>>, _: Option<Vec<Tensor<5>>>| {
            calls.lock().unwrap().push(x[0].dims()[0]);
            let is_cond = cond[0]
                .clone()
                .sum_dim(2)
                .sum_dim(1)
                .greater_elem(0.0)
                .float();
            let n = x[0].dims()[0];
            let per_row = is_cond.reshape([n, 1, 1, 1, 1]) * (a - b) + b;
            Ok(vec![x[0].zeros_like() + per_row])
        };
    let noise = Tensor::<5>::random([1, 3, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let cond = Tensor::<3>::ones([1, 2, 4], &device);
    let uncond = Tensor::<3>::zeros([1, 2, 4], &device);
    let cache = FasterCacheConfig {
        cfg_start: 0.25,
        cfg_interval: 3,
        band_boost: 0.2,
        ..FasterCacheConfig::default()
    };
    let steps = 8;
    let config = sampler(steps, Some(cache));
    let out = sample_with_velocity(
        vec![noise.clone()],
        vec![cond],
        vec![uncond],
        config,
        false,
        velocity,
    )
    .unwrap()
    .remove(0);
    // Steps 0, 1 (before 0.25·8 = 2), 2, 5 run both branches; the others the conditional alone.
    assert_eq!(*calls.lock().unwrap(), [2, 2, 2, 1, 1, 2, 1, 1]);
    // Written out: full steps v = B + g·(A − B); cached steps rebuild B as
    // A + s_low·(B − A) (the difference has no high frequencies).
    let g = config.guidance;
    let mut x = 0.0f64;
    for i in 0..steps {
        let (sigma, next) = (
            1.0 - i as f64 / steps as f64,
            1.0 - (i + 1) as f64 / steps as f64,
        );
        let uncond = if cache.runs_both_branches(i, steps) {
            b as f64
        } else {
            a as f64 + cache.band_scales(i, steps).0 * (b - a) as f64
        };
        x += (uncond + g * (a as f64 - uncond)) * (next - sigma);
    }
    let moved = (out - noise).mean().into_scalar::<f32>() as f64;
    assert!((moved - x).abs() < 1e-5, "moved {moved}, written out {x}");
}

#[test]
fn attention_reuse_extrapolates_each_blocks_attention_on_its_steps() {
    let device = Device::flex();
    let model = jittered(AttentionKind::Dense, &device);
    let depth = model.blocks().len();
    let x = |seed: u64| burn_dit::data::SplitMix(seed).normal_tensor([1, 3, 4, 16, 16], &device);
    let sigma = Tensor::<1>::from_floats([0.5], &device);
    let cond = model.embed_labels(Tensor::from_ints([[1, 4]], &device));
    let cache = FasterCacheConfig {
        attention_window: [0.0, 1.0],
        ..FasterCacheConfig::default()
    };
    let state = SamplingState::new(depth, 4, Some(cache), None);
    let reuse = state.reuse().unwrap();
    let step = |input: Tensor<5>| {
        state.begin_step();
        model
            .forward(
                VideoDitInput::new(input, sigma.clone(), cond.clone()).with_estimate(None),
                &ForwardContext::whole().with_sampling(&state),
            )
            .unwrap()
    };
    // Step 0 computes; step 1 is due but has one step of history, so it computes; step 2 is
    // not due. All three see the same input, so steps 1 and 2 leave equal attentions.
    let full = model
        .forward(
            VideoDitInput::new(x(1), sigma.clone(), cond.clone()),
            &ForwardContext::whole(),
        )
        .unwrap();
    for _ in 0..3 {
        assert!(max_abs_diff(step(x(1)), full.clone()) < 1e-5);
    }
    assert_eq!(reuse.counts(), (0, 3 * depth));
    // Step 3 is due: every block's attention is F₂ + w·(F₂ − F₁) = F₂, the attention of the
    // old input, while the rest of the network sees the new one.
    let reused = step(x(2));
    assert_eq!(reuse.counts(), (depth, 3 * depth));
    let computed = model
        .forward(
            VideoDitInput::new(x(2), sigma.clone(), cond.clone()),
            &ForwardContext::whole(),
        )
        .unwrap();
    assert!(
        max_abs_diff(reused.clone(), computed) > 1e-3,
        "the attention was reused"
    );
    assert!(reused.abs().max().into_scalar::<f32>().is_finite());
}

#[test]
fn faster_cache_samples_with_dsv_and_dual_scope_attention() {
    let device = Device::flex();
    let cache = FasterCacheConfig {
        attention_window: [0.0, 1.0],
        cfg_start: 0.0,
        cfg_interval: 2,
        ..FasterCacheConfig::default()
    };
    let noise = Tensor::<5>::random([1, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    // DSV held sparse (no profile yet: the policy's budgets).
    let policy = burn_dit::DsvPolicy::new()
        .with_min_sparse_len(0)
        .with_sparsity_threshold(0.0)
        .with_query_cube([1, 2, 2]);
    let mut dsv = jittered(AttentionKind::Dsv(policy), &device);
    for layer in dsv.dsv_layers_mut() {
        layer.set_stage(DsvStage::Sparse);
        assert!(layer.runs_sparse(64));
    }
    let cond = dsv.embed_labels(Tensor::from_ints([[1, 4]], &device));
    let uncond = dsv.embed_labels(Tensor::from_ints([[0, 0]], &device));
    let plain = sample_euler(
        &dsv,
        noise.clone(),
        cond.clone(),
        uncond.clone(),
        sampler(6, None),
    )
    .unwrap();
    let cached = sample_euler(
        &dsv,
        noise.clone(),
        cond.clone(),
        uncond.clone(),
        sampler(6, Some(cache)),
    )
    .unwrap();
    let gap = max_abs_diff(plain.clone(), cached.clone());
    let scale = plain.abs().max().into_scalar::<f32>();
    assert!(
        gap > 1e-4 && gap < 0.5 * scale,
        "DSV: gap {gap} at scale {scale}"
    );

    let scope = DualScopeConfig::new().with_window(1).with_global_frames(2);
    let dual = jittered(AttentionKind::DualScope(scope.clone()), &device);
    let single = Communicator::single(device.clone());
    let layout = ClipLayout::uniform(2, 2, 1).unwrap();
    let clips = |t: Tensor<5>| vec![t.clone().narrow(2, 0, 2), t.narrow(2, 2, 2)];
    let run = |config| {
        sample_euler_clips(
            &dual,
            ClipGroup {
                comm: &single,
                layout: &layout,
                scope: &scope,
            },
            clips(noise.clone()),
            vec![cond.clone(); 2],
            vec![uncond.clone(); 2],
            config,
        )
        .unwrap()
    };
    let plain = Tensor::cat(run(sampler(6, None)), 2);
    let cached = Tensor::cat(run(sampler(6, Some(cache))), 2);
    let gap = max_abs_diff(plain.clone(), cached);
    let scale = plain.abs().max().into_scalar::<f32>();
    assert!(
        gap > 1e-4 && gap < 0.5 * scale,
        "dual-scope: gap {gap} at scale {scale}"
    );
}
