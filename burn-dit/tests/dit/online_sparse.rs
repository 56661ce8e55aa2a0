use burn::tensor::{Device, Tensor};
use burn_ctx_parallel::transport::run_in_process;
use burn_dit::DitError;
use burn_dit::sample::SamplingState;
use burn_dit::sample::faster_cache::FasterCacheConfig;
use burn_dit::sample::long_video::generate_long;
use burn_dit::sample::online_sparse::{OnlineSparseConfig, OnlineStep};
use burn_dit::sample::{SamplerConfig, sample_euler_with_state};
use burn_dit::{AttentionKind, ClipGroup, ClipLayout, DualScopeConfig, VideoDit};
use burn_sparse_attn::dsv::{DsvHost, DsvStage};

use crate::common::*;
use burn_dit::{ForwardContext, VideoDitInput};

/// Online sparse attention on the micro model's 64-token clips: cubes of 4 tokens.
fn online(sparsity: f64) -> OnlineSparseConfig {
    OnlineSparseConfig {
        sparsity,
        warmup: 0.34,
        search_every: 10,
        query_cube: [1, 2, 2],
        keep_tail: false,
        min_len: 0,
    }
}

fn sampler(steps: usize, online: Option<OnlineSparseConfig>) -> SamplerConfig {
    SamplerConfig {
        online_sparse: online,
        ..plain_sampler(steps)
    }
}

struct Inputs {
    noise: Tensor<5>,
    cond: Tensor<3>,
    uncond: Tensor<3>,
}

fn inputs(model: &VideoDit, device: &Device) -> Inputs {
    Inputs {
        noise: burn_dit::data::SplitMix(5).normal_tensor([2, 3, 4, 16, 16], device),
        cond: model.embed_labels(Tensor::from_ints([[1, 4], [2, 5]], device)),
        uncond: model.embed_labels(Tensor::from_ints([[0, 0], [0, 0]], device)),
    }
}

fn sample(model: &VideoDit, inputs: &Inputs, config: SamplerConfig) -> (Tensor<5>, SamplingState) {
    let state = config.sampling_state(model);
    let out = sample_euler_with_state(
        model,
        inputs.noise.clone(),
        inputs.cond.clone(),
        inputs.uncond.clone(),
        config,
        &state,
    )
    .unwrap();
    (out, state)
}

#[test]
fn the_online_schedule_and_budgets_follow_the_config() {
    let c = OnlineSparseConfig::default();
    let kinds: Vec<OnlineStep> = (0..20).map(|i| c.step(i, 20)).collect();
    for (i, kind) in kinds.iter().enumerate() {
        let want = match i {
            0..4 => OnlineStep::Dense,
            4 | 14 => OnlineStep::Search,
            _ => OnlineStep::Sparse,
        };
        assert_eq!(*kind, want, "step {i}");
    }
    let no_warmup = OnlineSparseConfig {
        warmup: 0.0,
        search_every: 3,
        ..c
    };
    assert_eq!(no_warmup.step(0, 10), OnlineStep::Search);
    assert_eq!(no_warmup.step(2, 10), OnlineStep::Sparse);
    assert_eq!(no_warmup.step(3, 10), OnlineStep::Search);
    // ceil((1 − s)·S) rounded up to 16, at most S.
    assert_eq!(c.budget(256), 32);
    assert_eq!(c.budget(4096), 416);
    assert_eq!(c.budget(10), 10);
    assert_eq!(OnlineSparseConfig::new(0.0).budget(100), 100);
    assert_eq!(OnlineSparseConfig::new(0.5).budget(64), 32);
}

#[test]
fn bad_online_settings_are_named_errors() {
    let c = OnlineSparseConfig::default();
    let bad = [
        (
            OnlineSparseConfig { sparsity: 1.0, ..c },
            "online_sparse.sparsity",
        ),
        (
            OnlineSparseConfig {
                sparsity: -0.1,
                ..c
            },
            "online_sparse.sparsity",
        ),
        (
            OnlineSparseConfig { warmup: 1.0, ..c },
            "online_sparse.warmup",
        ),
        (
            OnlineSparseConfig {
                search_every: 0,
                ..c
            },
            "online_sparse.search_every",
        ),
        (
            OnlineSparseConfig {
                query_cube: [1, 0, 4],
                ..c
            },
            "online_sparse.query_cube",
        ),
    ];
    for (config, argument) in bad {
        let err = sampler(4, Some(config)).check("sample_euler").unwrap_err();
        assert_eq!(
            (err.function, err.argument),
            ("sample_euler", argument),
            "{err}"
        );
    }
    assert!(sampler(4, Some(c)).check("sample_euler").is_ok());
}

#[test]
fn online_sparse_over_every_key_is_dense_sampling() {
    let device = Device::flex();
    let model = jittered(AttentionKind::Dense, &device);
    let inputs = inputs(&model, &device);
    let (plain, _) = sample(&model, &inputs, sampler(6, None));
    // Sparsity 0: every search keeps all 64 keys, so the sparse steps are dense attention.
    let (all_keys, state) = sample(&model, &inputs, sampler(6, Some(online(0.0))));
    let gap = max_abs_diff(plain.clone(), all_keys);
    assert!(gap < 1e-4, "gap {gap}");
    // The timed dense baseline attends densely at every step and records it.
    let (timed, timed_state) = sample(
        &model,
        &inputs,
        sampler(6, Some(OnlineSparseConfig::dense_timed())),
    );
    assert!(max_abs_diff(plain.clone(), timed) < 1e-5);
    for layer in timed_state.online().unwrap().layer_stats() {
        assert_eq!((layer.dense, layer.searches, layer.sparse), (6, 0, 0));
        assert!(layer.seconds > 0.0, "{layer:?}");
    }
    // Steps 0–2 dense, 3 searches, 4–5 sparse; one clip per call.
    for layer in state.online().unwrap().layer_stats() {
        assert_eq!((layer.dense, layer.searches, layer.sparse), (3, 1, 2));
        assert_eq!(layer.sparsity, 0.0);
        assert!(
            layer.recall.iter().all(|r| (r - 1.0).abs() < 1e-5),
            "{layer:?}"
        );
    }
}

#[test]
fn online_sparse_skips_keys_and_reports_what_it_kept() {
    let device = Device::flex();
    let model = jittered(AttentionKind::Dense, &device);
    let inputs = inputs(&model, &device);
    let (plain, _) = sample(&model, &inputs, sampler(6, None));
    let (sparse, state) = sample(&model, &inputs, sampler(6, Some(online(0.75))));
    let gap = max_abs_diff(plain.clone(), sparse.clone());
    let scale = plain.clone().abs().max().into_scalar::<f32>();
    assert!(
        gap > 1e-4 && gap < 0.5 * scale,
        "gap {gap} at scale {scale}"
    );
    // The stored tail changes the sparse steps (whether it helps depends on how steady the
    // attention is across steps: bench_sampling measures it on trained checkpoints).
    let with_tail = OnlineSparseConfig {
        keep_tail: true,
        ..online(0.75)
    };
    let (tailed, _) = sample(&model, &inputs, sampler(6, Some(with_tail)));
    assert!(tailed.clone().abs().max().into_scalar::<f32>().is_finite());
    assert!(max_abs_diff(tailed, sparse.clone()) > 1e-4);
    let layers = state.online().unwrap().layer_stats();
    assert_eq!(layers.len(), model.blocks().len());
    for layer in layers {
        assert_eq!((layer.dense, layer.searches, layer.sparse), (3, 1, 2));
        // 16 of 64 keys per cube.
        assert!((layer.sparsity - 0.75).abs() < 1e-9, "{layer:?}");
        assert_eq!(layer.recall.len(), 2);
        // The heaviest quarter of the keys holds more than a quarter of the mass.
        assert!(
            layer.recall.iter().all(|&r| r > 0.25 && r < 1.0),
            "{layer:?}"
        );
    }
}

/// Step 0 searches on both guidance branches; step 1 runs the conditional branch alone, on
/// the same input, with the first half of that index. Returns (searched − dense, sparse −
/// dense) of the two steps.
fn search_then_sparse_on_the_same_input(keep_tail: bool) -> (f32, f32) {
    let device = Device::flex();
    let model = jittered(AttentionKind::Dense, &device);
    let inputs = inputs(&model, &device);
    let config = OnlineSparseConfig {
        warmup: 0.0,
        keep_tail,
        ..online(0.75)
    };
    let state = SamplingState::new(model.blocks().len(), 4, None, Some(config));
    let sigma = Tensor::<1>::from_floats([0.5, 0.5, 0.5, 0.5], &device);
    let both = Tensor::cat(vec![inputs.noise.clone(); 2], 0);
    let cond = Tensor::cat(vec![inputs.cond.clone(), inputs.uncond.clone()], 0);
    state.begin_step();
    let searched = model
        .forward(
            VideoDitInput::new(both.clone(), sigma.clone(), cond.clone()).with_estimate(None),
            &ForwardContext::whole().with_sampling(&state),
        )
        .unwrap();
    let dense = model
        .forward(
            VideoDitInput::new(both, sigma.clone(), cond),
            &ForwardContext::whole(),
        )
        .unwrap();
    state.begin_step();
    let sigma = sigma.narrow(0, 0, 2);
    let sparse = model
        .forward(
            VideoDitInput::new(inputs.noise.clone(), sigma.clone(), inputs.cond.clone())
                .with_estimate(None),
            &ForwardContext::whole().with_sampling(&state),
        )
        .unwrap();
    assert!(sparse.clone().abs().max().into_scalar::<f32>().is_finite());
    for layer in state.online().unwrap().layer_stats() {
        assert_eq!((layer.dense, layer.searches, layer.sparse), (0, 1, 1));
    }
    let conditional = model
        .forward(
            VideoDitInput::new(inputs.noise.clone(), sigma, inputs.cond.clone()),
            &ForwardContext::whole(),
        )
        .unwrap();
    (
        max_abs_diff(searched, dense),
        max_abs_diff(sparse, conditional),
    )
}

#[test]
fn a_search_step_is_exact_and_its_index_serves_the_conditional_half() {
    let (searched, sparse) = search_then_sparse_on_the_same_input(false);
    assert!(
        searched < 1e-5,
        "the search step is dense attention: {searched}"
    );
    assert!(sparse > 1e-4, "the sparse step skips keys: {sparse}");
}

#[test]
fn the_kept_tail_restores_the_skipped_keys_on_unchanged_inputs() {
    // On the search's own inputs, the kept keys' attention merged with the stored tail is
    // the dense attention again.
    let (searched, sparse) = search_then_sparse_on_the_same_input(true);
    assert!(searched < 1e-5, "{searched}");
    assert!(
        sparse < 1e-4,
        "the tail completes the sparse step: {sparse}"
    );
}

#[test]
fn online_sparse_replaces_dsv_and_combines_with_faster_cache() {
    let device = Device::flex();
    // A DSV model held dense (an untrained predictor): online search instead of its own.
    let mut dsv = jittered(micro_dsv(), &device);
    for layer in dsv.dsv_layers_mut() {
        layer.set_stage(DsvStage::Dense);
    }
    let inputs = inputs(&dsv, &device);
    let (plain, _) = sample(&dsv, &inputs, sampler(6, None));
    let (all_keys, state) = sample(&dsv, &inputs, sampler(6, Some(online(0.0))));
    assert!(max_abs_diff(plain, all_keys) < 1e-4);
    assert!(state.online().unwrap().layer_stats()[0].sparse == 2);

    let cache = FasterCacheConfig {
        attention_window: [0.0, 1.0],
        cfg_start: 0.0,
        cfg_interval: 2,
        ..FasterCacheConfig::default()
    };
    let both = SamplerConfig {
        faster_cache: Some(cache),
        ..sampler(8, Some(online(0.75)))
    };
    let (out, state) = sample(&dsv, &inputs, both);
    assert!(out.abs().max().into_scalar::<f32>().is_finite());
    let (reused, _) = state.reuse().unwrap().counts();
    let layer = &state.online().unwrap().layer_stats()[0];
    assert!(reused > 0 && layer.sparse > 0, "{reused} reused, {layer:?}");
}

/// Dual-scope attention where every query sees every frame once, near ones as local keys and
/// far ones as global keys: each query cube keeps all it sees at sparsity 0, so sparse steps
/// are exact and the scope biases must be right for them to be.
fn every_frame_once() -> DualScopeConfig {
    DualScopeConfig::new()
        .with_window(1)
        .with_global_frames(4)
        .with_scope_bias(3.0)
        .with_switch_sigma(0.4)
}

#[test]
fn online_sparse_on_dual_scope_adds_the_scope_bias_and_searches_at_the_switch() {
    let device = Device::flex();
    let dual = jittered(AttentionKind::DualScope(every_frame_once()), &device);
    let inputs = inputs(&dual, &device);
    let (plain, _) = sample(&dual, &inputs, sampler(6, None));
    let (all_seen, state) = sample(&dual, &inputs, sampler(6, Some(online(0.0))));
    let gap = max_abs_diff(plain.clone(), all_seen);
    assert!(gap < 1e-4, "gap {gap}");
    // σ = 1, 5/6, …, 1/6: steps 0–2 dense, 3 searches (σ = 0.5, global keys favoured), 4
    // searches again (σ = 1/3: local keys favoured), 5 is sparse.
    for layer in state.online().unwrap().layer_stats() {
        assert_eq!(
            (layer.dense, layer.searches, layer.sparse),
            (3, 2, 1),
            "{layer:?}"
        );
        // 64 of the 128 keys (4 local and 4 global frames) are seen by each query.
        assert!((layer.sparsity - 0.5).abs() < 1e-9, "{layer:?}");
    }
    let (sparse, state) = sample(&dual, &inputs, sampler(6, Some(online(0.75))));
    let gap = max_abs_diff(plain.clone(), sparse);
    let scale = plain.abs().max().into_scalar::<f32>();
    assert!(
        gap > 1e-4 && gap < 0.5 * scale,
        "gap {gap} at scale {scale}"
    );
    let layer = &state.online().unwrap().layer_stats()[0];
    assert!((layer.sparsity - 0.75).abs() < 1e-9, "{layer:?}");
}

#[test]
fn online_sparse_over_clips_is_the_same_video_on_any_ranks() {
    let device = Device::flex();
    let scope = DualScopeConfig::new()
        .with_window(1)
        .with_global_frames(2)
        .with_scope_bias(3.0);
    let dual = jittered(AttentionKind::DualScope(scope.clone()), &device);
    let cond = vec![dual.embed_labels(Tensor::from_ints([[1, 4]], &device)); 4];
    let uncond = vec![dual.embed_labels(Tensor::from_ints([[0, 0]], &device)); 4];
    let generate = |world: usize, online: Option<OnlineSparseConfig>| {
        let layout = ClipLayout::uniform(4, 2, world).unwrap();
        run_in_process::<_, DitError>(&vec![device.clone(); world], |comm| {
            generate_long(
                &dual,
                ClipGroup {
                    comm: &comm,
                    layout: &layout,
                    scope: &scope,
                },
                [16, 16],
                &cond,
                &uncond,
                sampler(6, online),
                3,
            )
        })
        .into_iter()
        .map(Result::unwrap)
        .next()
        .flatten()
        .expect("rank 0 gets the video")
    };
    let plain = generate(1, None);
    let sparse = generate(1, Some(online(0.5)));
    assert_eq!(sparse, generate(2, Some(online(0.5))));
    let gap = plain
        .frames
        .iter()
        .flatten()
        .zip(sparse.frames.iter().flatten())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(gap > 0, "online sparse attention changed no pixel");
}
