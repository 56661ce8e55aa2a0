use std::sync::Mutex;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_ctx_parallel::transport::run_in_process;
use burn_dit::DitError;
use burn_dit::sample::faster_cache::FasterCacheConfig;
use burn_dit::sample::free_init::{FreeInitConfig, FrequencyFilter};
use burn_dit::sample::{
    SamplerConfig, sample_euler_clips, sample_euler_with_state, sample_with_velocity,
};
use burn_dit::{AttentionKind, ClipGroup, ClipLayout, DualScopeConfig};

use crate::common::*;

fn with(free_init: FreeInitConfig) -> SamplerConfig {
    SamplerConfig {
        guidance: 1.0,
        free_init: Some(free_init),
        ..plain_sampler(4)
    }
}

#[test]
fn the_filters_have_their_documented_response() {
    let base = FreeInitConfig::default();
    let filter = |filter| FreeInitConfig { filter, ..base };
    let butterworth = filter(FrequencyFilter::Butterworth { order: 4 });
    let gaussian = filter(FrequencyFilter::Gaussian);
    let ideal = filter(FrequencyFilter::Ideal);
    let ds = base.spatial_cutoff;
    for f in [butterworth, gaussian, ideal] {
        assert_eq!(f.gain([0.0, 0.0, 0.0]), 1.0);
    }
    // At the cut-off: ½ for Butterworth, e^(−½) for the Gaussian, the edge of the ideal one.
    assert!((butterworth.gain([0.0, ds, 0.0]) - 0.5).abs() < 1e-12);
    assert!((gaussian.gain([0.0, 0.0, ds]) - (-0.5f64).exp()).abs() < 1e-12);
    assert_eq!(ideal.gain([0.0, ds * 0.99, 0.0]), 1.0);
    assert_eq!(ideal.gain([0.0, ds * 1.01, 0.0]), 0.0);
    // Butterworth of order 4 falls as (d/d_s)^8 beyond the cut-off.
    let far = butterworth.gain([0.0, 2.0 * ds, 0.0]);
    assert!((far - 1.0 / (1.0 + 256.0)).abs() < 1e-12);
    // The temporal cut-off lands where the spatial one does.
    let skewed = FreeInitConfig {
        temporal_cutoff: 0.5,
        ..butterworth
    };
    assert!((skewed.gain([0.5, 0.0, 0.0]) - 0.5).abs() < 1e-12);
}

/// `[1, 1, T, H, W]` of `f(t, y, x)`.
fn video(
    [t, h, w]: [usize; 3],
    f: impl Fn(usize, usize, usize) -> f32,
    device: &Device,
) -> Tensor<5> {
    let mut values = Vec::with_capacity(t * h * w);
    for ti in 0..t {
        for y in 0..h {
            for x in 0..w {
                values.push(f(ti, y, x));
            }
        }
    }
    Tensor::<3>::from_data(TensorData::new(values, [t, h, w]), device).unsqueeze::<5>()
}

#[test]
fn the_low_pass_keeps_slow_changes_and_drops_fast_ones() {
    let device = Device::flex();
    let ideal = FreeInitConfig {
        filter: FrequencyFilter::Ideal,
        ..FreeInitConfig::default()
    };
    let dims = [8, 16, 16];
    let tau = std::f32::consts::TAU;
    let constant = video(dims, |_, _, _| 1.5, &device);
    // Normalised frequency 2·1/16 = 0.125 in space: inside the 0.25 cut-off.
    let slow = video(dims, |_, y, _| (tau * y as f32 / 16.0).cos(), &device);
    // A frame-to-frame sign flip: temporal frequency 1, far outside.
    let flicker = video(dims, |t, _, _| if t % 2 == 0 { 1.0 } else { -1.0 }, &device);
    for (name, x, kept) in [
        ("constant", constant, true),
        ("slow", slow.clone(), true),
        ("flicker", flicker.clone(), false),
    ] {
        let low = ideal.low_pass(x.clone()).unwrap();
        let want = if kept { x } else { x.zeros_like() };
        assert!(max_abs_diff(low, want) < 1e-4, "{name}");
    }
    let low = ideal.low_pass(slow.clone() + flicker).unwrap();
    assert!(max_abs_diff(low, slow) < 1e-4);
    let err = ideal
        .low_pass(Tensor::zeros([1, 1, 6, 16, 16], &device))
        .unwrap_err()
        .to_string();
    assert!(err.contains("powers of two"), "{err}");
}

#[test]
fn reinitialising_renoises_the_low_band_and_redraws_the_high_one() {
    let device = Device::flex();
    let config = FreeInitConfig {
        filter: FrequencyFilter::Ideal,
        ..FreeInitConfig::default()
    };
    let s = config.renoise_sigma as f32;
    let dims = [4, 8, 8];
    // Constant (all low-frequency) clean video and noise, high-frequency fresh noise.
    let clean = video(dims, |_, _, _| 0.5, &device);
    let noise = video(dims, |_, _, _| -2.0, &device);
    let fresh = video(
        dims,
        |_, y, x| if (x + y) % 2 == 0 { 1.0 } else { -1.0 },
        &device,
    );
    let start = config
        .reinitialise(clean.clone(), noise.clone(), fresh.clone())
        .unwrap();
    let want = clean * (1.0 - s) + noise * s + fresh * s;
    assert!(max_abs_diff(start, want) < 1e-4);
}

#[test]
fn bad_free_init_settings_are_named() {
    let good = FreeInitConfig::default();
    for (bad, field) in [
        (
            FreeInitConfig {
                iterations: 0,
                ..good
            },
            "iterations",
        ),
        (
            FreeInitConfig {
                iterations: 9,
                ..good
            },
            "iterations",
        ),
        (
            FreeInitConfig {
                spatial_cutoff: 0.0,
                ..good
            },
            "spatial_cutoff",
        ),
        (
            FreeInitConfig {
                temporal_cutoff: 1.5,
                ..good
            },
            "temporal_cutoff",
        ),
        (
            FreeInitConfig {
                renoise_sigma: 1.0,
                ..good
            },
            "renoise_sigma",
        ),
        (
            FreeInitConfig {
                filter: FrequencyFilter::Butterworth { order: 0 },
                ..good
            },
            "filter",
        ),
    ] {
        let err = with(bad).check("sample_euler").unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    let coarse = FreeInitConfig {
        coarse_to_fine: true,
        ..good
    };
    assert_eq!(
        (0..3).map(|i| coarse.steps_of(i, 20)).collect::<Vec<_>>(),
        [7, 14, 20]
    );
    assert_eq!(good.steps_of(0, 20), 20);
}

#[test]
fn each_pass_after_the_first_starts_at_the_renoise_level() {
    let device = Device::flex();
    let sigmas = Mutex::new(Vec::new());
    let velocity = |x: Vec<Tensor<5>>, sigma: f64, _: Vec<Tensor<3>>, _: Option<Vec<Tensor<5>>>| {
        sigmas.lock().unwrap().push(sigma);
        Ok(vec![x[0].clone() * 0.5])
    };
    let noise = Tensor::<5>::random([1, 3, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let cond = vec![Tensor::<3>::ones([1, 2, 4], &device)];
    let run = |config: SamplerConfig| {
        sigmas.lock().unwrap().clear();
        let out = sample_with_velocity(
            vec![noise.clone()],
            cond.clone(),
            cond.clone(),
            config,
            false,
            velocity,
        )
        .unwrap()
        .remove(0);
        (out, sigmas.lock().unwrap().clone())
    };
    // One pass is the plain sampler.
    let one = FreeInitConfig {
        iterations: 1,
        ..FreeInitConfig::default()
    };
    let plain = SamplerConfig {
        free_init: None,
        ..with(one)
    };
    let (a, plain_sigmas) = run(plain);
    let (b, one_sigmas) = run(with(one));
    assert_eq!(plain_sigmas, one_sigmas);
    assert!(max_abs_diff(a, b) == 0.0);
    // Three passes, coarse to fine: 2, 3, then 4 steps, the later ones from σ = 0.8 down.
    let three = FreeInitConfig {
        coarse_to_fine: true,
        ..FreeInitConfig::default()
    };
    let (_, sigmas) = run(with(three));
    let want = [
        1.0,
        0.5,
        0.8,
        0.8 * 2.0 / 3.0,
        0.8 / 3.0,
        0.8,
        0.6,
        0.4,
        0.2,
    ];
    assert_eq!(sigmas.len(), want.len());
    for (got, want) in sigmas.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "{sigmas:?}");
    }
}

#[test]
fn free_init_over_clips_filters_the_whole_video_alike_on_any_ranks() {
    let device = Device::flex();
    let scope = DualScopeConfig::new().with_window(1).with_global_frames(2);
    let model = jittered(AttentionKind::DualScope(scope.clone()), &device);
    let cond = model.embed_labels(Tensor::from_ints([[1, 4]], &device));
    let uncond = model.embed_labels(Tensor::from_ints([[0, 0]], &device));
    // Four clips of two frames: the filter sees 8 frames whatever the ranks hold.
    let noise = burn_dit::data::SplitMix(3).normal_tensor([1, 3, 8, 16, 16], &device);
    let free_init = FreeInitConfig {
        iterations: 2,
        ..FreeInitConfig::default()
    };
    let sample = |world: usize, config: SamplerConfig| -> Tensor<5> {
        let layout = ClipLayout::uniform(4, 2, world).unwrap();
        let parts = run_in_process::<_, DitError>(&vec![device.clone(); world], |comm| {
            let clips = layout
                .clips_of(comm.rank())
                .map(|c| noise.clone().narrow(2, layout.frame_offset(c), 2))
                .collect::<Vec<_>>();
            let n = clips.len();
            sample_euler_clips(
                &model,
                ClipGroup {
                    comm: &comm,
                    layout: &layout,
                    scope: &scope,
                },
                clips,
                vec![cond.clone(); n],
                vec![uncond.clone(); n],
                config,
            )
        });
        let clips: Vec<Tensor<5>> = parts.into_iter().flat_map(Result::unwrap).collect();
        Tensor::cat(clips, 2)
    };
    let one_rank = sample(1, with(free_init));
    let two_ranks = sample(2, with(free_init));
    assert!(max_abs_diff(one_rank.clone(), two_ranks) < 1e-4);
    let plain = sample(
        1,
        SamplerConfig {
            free_init: None,
            ..with(free_init)
        },
    );
    assert!(
        max_abs_diff(one_rank, plain) > 1e-3,
        "the second pass changes the video"
    );
}

#[test]
fn every_free_init_pass_runs_the_attention_reuse_schedule_again() {
    let device = Device::flex();
    let model = jittered(AttentionKind::Dense, &device);
    let cond = model.embed_labels(Tensor::from_ints([[1, 4]], &device));
    let uncond = model.embed_labels(Tensor::from_ints([[0, 0]], &device));
    let noise = burn_dit::data::SplitMix(9).normal_tensor([1, 3, 4, 16, 16], &device);
    let config = SamplerConfig {
        faster_cache: Some(FasterCacheConfig {
            attention_window: [0.0, 1.0],
            ..FasterCacheConfig::default()
        }),
        ..with(FreeInitConfig {
            iterations: 2,
            coarse_to_fine: false,
            ..FreeInitConfig::default()
        })
    };
    let state = config.sampling_state(&model);
    let out = sample_euler_with_state(&model, noise, cond, uncond, config, &state).unwrap();
    assert!(out.abs().max().into_scalar::<f32>().is_finite());
    // Per pass of 4 steps, step 3 is the one with two steps of history to extrapolate from.
    let depth = model.blocks().len();
    assert_eq!(state.reuse().unwrap().counts(), (2 * depth, 6 * depth));
}
