use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn_ctx_parallel::Communicator;
use burn_ctx_parallel::transport::run_in_process;
use burn_dit::DitError;
use burn_dit::media::Frames;
use burn_dit::metrics::clip_continuity;
use burn_dit::sample::long_video::{clip_noise, generate_long};
use burn_dit::sample::{SamplerConfig, sample_euler, sample_euler_clips};
use burn_dit::{
    AttentionKind, ClipGroup, ClipLayout, Conditioning, DualScopeConfig, ForwardContext, VideoDit,
    VideoDitInput,
};

use crate::common::*;

fn labels(ids: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [ids.len() / 2, 2]), device)
}

/// The clips of rank `rank`.
fn split(x: &Tensor<5>, layout: &ClipLayout, rank: usize) -> Vec<Tensor<5>> {
    layout
        .clips_of(rank)
        .map(|c| {
            x.clone()
                .narrow(2, layout.frame_offset(c), layout.frames(c))
        })
        .collect()
}

/// `body` on `world` ranks (threads), every rank's result in rank order.
fn on_ranks<R: Send>(
    world: usize,
    device: &Device,
    body: impl Fn(Communicator) -> Result<R, burn_dit::DitError> + Sync,
) -> Vec<R> {
    run_in_process::<_, DitError>(&vec![device.clone(); world], body)
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_video_over_ranks_equals_the_whole_video_on_one_device() {
    let device = Device::flex();
    let scope = DualScopeConfig::new()
        .with_window(2)
        .with_global_frames(3)
        .with_scope_bias(3.0);
    let x = Tensor::<5>::random([2, 3, 8, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let sigmas = [0.9, 0.2];
    let sigma = Tensor::<1>::from_data(
        TensorData::new(sigmas.iter().map(|&s| s as f32).collect(), [2]),
        &device,
    );
    // The micro model, then with the output convolution and a self-conditioning estimate.
    let plain = micro_model(AttentionKind::DualScope(scope.clone()));
    for config in [
        plain.clone(),
        plain.with_head_conv(true).with_self_condition(true),
    ] {
        let estimate = config.self_condition.then(|| {
            Tensor::<5>::random([2, 3, 8, 16, 16], Distribution::Normal(0.0, 1.0), &device)
        });
        let model = jittered_model(config, &device);
        let cond = model.embed_labels(labels(&[1, 4, 2, 5], &device));
        let whole = model
            .forward(
                VideoDitInput::new(x.clone(), sigma.clone(), cond.clone())
                    .with_estimate(estimate.clone()),
                &ForwardContext::whole(),
            )
            .unwrap();
        assert!(
            whole.clone().abs().max().into_scalar::<f32>() > 1e-2,
            "the jittered model must produce something"
        );
        for (frames, world) in [
            (vec![8], 1),
            (vec![4, 4], 2),
            (vec![2, 3, 3], 3),
            (vec![2, 2, 2, 2], 3),
        ] {
            let layout = ClipLayout::new(frames.clone(), world).unwrap();
            let clips = on_ranks(world, &device, |comm| {
                let rank = comm.rank();
                let estimates = estimate.as_ref().map(|e| split(e, &layout, rank));
                let input = VideoDitInput {
                    x: Tensor::cat(split(&x, &layout, rank), 2),
                    sigma: sigma.clone(),
                    cond: Conditioning::Video(cond.clone()),
                    estimate: estimates.map(|e| Tensor::cat(e, 2)),
                };
                model.forward(
                    input,
                    &ForwardContext::clips(
                        ClipGroup {
                            comm: &comm,
                            layout: &layout,
                            scope: &scope,
                        },
                        &sigmas,
                    ),
                )
            });
            let err = max_abs_diff(Tensor::cat(clips, 2), whole.clone());
            assert!(err < 1e-4, "clips {frames:?} on {world} ranks: error {err}");
        }
    }
}

#[test]
fn dual_scope_with_a_window_over_the_clip_is_the_dense_model() {
    let device = Device::flex();
    let scope = DualScopeConfig::new()
        .with_window(8)
        .with_global_frames(2)
        .with_scope_bias(0.0);
    let dual = jittered(AttentionKind::DualScope(scope), &device);
    let dense = micro_model(AttentionKind::Dense)
        .init(&device)
        .load_record(dual.clone().into_record());
    let x = Tensor::<5>::random([1, 3, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.6f32], [1]), &device);
    let cond = dual.embed_labels(labels(&[3, 6], &device));
    let err = max_abs_diff(
        dual.forward(
            VideoDitInput::new(x.clone(), sigma.clone(), cond.clone()),
            &ForwardContext::whole(),
        )
        .unwrap(),
        dense
            .forward(VideoDitInput::new(x, sigma, cond), &ForwardContext::whole())
            .unwrap(),
    );
    assert!(err < 1e-4, "error {err}");
}

#[test]
fn long_video_sampling_gives_each_clip_its_noise_and_prompt() {
    let device = Device::flex();
    let scope = DualScopeConfig::new().with_window(1).with_global_frames(2);
    let model = jittered(AttentionKind::Dense, &device);
    let sampler = SamplerConfig {
        steps: 2,
        guidance: 2.0,
        shift: 2.0,
        guidance_max_sigma: 1.0,
        stochasticity: 0.0,
        faster_cache: None,
        free_init: None,
        online_sparse: None,
    };
    // One clip on one rank is the ordinary sampler of a dual-scope model.
    let dual = jittered(AttentionKind::DualScope(scope.clone()), &device);
    let one = ClipLayout::new(vec![4], 1).unwrap();
    let single = Communicator::single(device.clone());
    let noise = clip_noise(5, 0, [1, 3, 4, 16, 16], &device);
    let cond = dual.embed_labels(labels(&[1, 4], &device));
    let uncond = dual.embed_labels(labels(&[0, 0], &device));
    let plain = sample_euler(&dual, noise.clone(), cond.clone(), uncond.clone(), sampler).unwrap();
    let clipped = sample_euler_clips(
        &dual,
        ClipGroup {
            comm: &single,
            layout: &one,
            scope: &scope,
        },
        vec![noise],
        vec![cond],
        vec![uncond],
        sampler,
    )
    .unwrap();
    assert!(max_abs_diff(plain, clipped[0].clone()) < 1e-4);

    // Three ranks, four clips, a prompt that changes half way.
    let layout = ClipLayout::uniform(4, 2, 3).unwrap();
    let prompt = |ids: &[i64]| model.embed_labels(labels(ids, &device));
    let cond = vec![
        prompt(&[1, 4]),
        prompt(&[1, 4]),
        prompt(&[2, 6]),
        prompt(&[2, 6]),
    ];
    let uncond = vec![prompt(&[0, 0]); 4];
    let generate = |seed: u64, world: usize| {
        let layout = ClipLayout::uniform(4, 2, world).unwrap();
        let mut videos = on_ranks(world, &device, |comm| {
            generate_long(
                &model,
                ClipGroup {
                    comm: &comm,
                    layout: &layout,
                    scope: &scope,
                },
                [16, 16],
                &cond,
                &uncond,
                sampler,
                seed,
            )
        });
        assert!(
            videos[1..].iter().all(Option::is_none),
            "only rank 0 gets the video"
        );
        videos.remove(0).expect("rank 0 gets the video")
    };
    let video = generate(9, layout.world());
    assert_eq!((video.len(), video.height, video.width), (8, 16, 16));
    // The same on one rank and on two, and another video from another seed.
    let one_rank = on_ranks(1, &device, |comm| {
        generate_long(
            &model,
            ClipGroup {
                comm: &comm,
                layout: &ClipLayout::uniform(4, 2, 1).unwrap(),
                scope: &scope,
            },
            [16, 16],
            &cond,
            &uncond,
            sampler,
            9,
        )
    })
    .remove(0)
    .unwrap();
    assert_eq!(video, one_rank);
    assert_eq!(video, generate(9, 2));
    assert_ne!(video, generate(10, 3));
    // Each clip has its own noise stream, the same wherever the clip sits.
    let a = clip_noise(9, 0, [1, 3, 2, 4, 4], &device);
    assert!(max_abs_diff(a.clone(), clip_noise(9, 0, [1, 3, 2, 4, 4], &device)) == 0.0);
    assert!(max_abs_diff(a, clip_noise(9, 1, [1, 3, 2, 4, 4], &device)) > 0.1);
}

#[test]
fn forward_clips_names_bad_arguments() {
    let device = Device::flex();
    let scope = DualScopeConfig::new().with_window(1);
    let model = micro_model(AttentionKind::Dense).init(&device);
    let comm = Communicator::single(device.clone());
    let layout = ClipLayout::uniform(2, 2, 1).unwrap();
    let x = Tensor::<5>::zeros([1, 3, 2, 16, 16], &device);
    let cond = model.embed_labels(labels(&[1, 4], &device));
    let two = Tensor::cat(vec![x.clone(); 2], 2);
    let input = |x: Tensor<5>, cond: Conditioning, estimate: Option<Tensor<5>>| {
        let b = x.dims()[0];
        let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.5f32; b], [b]), &device);
        VideoDitInput {
            x,
            sigma,
            cond,
            estimate,
        }
    };
    let run = |model: &VideoDit,
               x: Tensor<5>,
               sigmas: &[f64],
               cond: Conditioning,
               estimate: Option<Tensor<5>>,
               layout: &ClipLayout,
               scope: &DualScopeConfig| {
        model.forward(
            input(x, cond, estimate),
            &ForwardContext::clips(
                ClipGroup {
                    comm: &comm,
                    layout,
                    scope,
                },
                sigmas,
            ),
        )
    };
    let error = |x: Tensor<5>,
                 sigmas: &[f64],
                 cond: Conditioning,
                 layout: &ClipLayout,
                 scope: &DualScopeConfig| {
        run(&model, x, sigmas, cond, None, layout, scope)
            .unwrap_err()
            .argument()
    };
    let video = || Conditioning::Video(cond.clone());
    // The rank's clips are 2 + 2 frames.
    assert_eq!(error(x.clone(), &[0.5], video(), &layout, &scope), "x");
    assert_eq!(
        error(
            two.clone(),
            &[0.5],
            Conditioning::PerClip(vec![cond.clone()]),
            &layout,
            &scope
        ),
        "input.cond"
    );
    assert_eq!(
        error(two.clone(), &[0.5, 0.5], video(), &layout, &scope),
        "sigmas"
    );
    assert_eq!(
        error(
            two.clone().narrow(2, 0, 3),
            &[0.5],
            video(),
            &layout,
            &scope
        ),
        "x"
    );
    assert_eq!(
        error(
            two.clone(),
            &[0.5],
            video(),
            &layout,
            &scope.clone().with_window(3)
        ),
        "config.window"
    );
    assert_eq!(
        error(
            two.clone(),
            &[0.5],
            video(),
            &ClipLayout::uniform(2, 2, 2).unwrap(),
            &scope
        ),
        "layout"
    );
    // Per-clip conditioning needs clips.
    assert_eq!(
        model
            .forward(
                input(x.clone(), Conditioning::PerClip(vec![cond.clone()]), None),
                &ForwardContext::whole()
            )
            .unwrap_err()
            .argument(),
        "input.cond"
    );
    // An estimate like the rank's frames, and only for a self-conditioning model.
    let refining = micro_model(AttentionKind::Dense)
        .with_self_condition(true)
        .init(&device);
    let estimate = |e: Tensor<5>| {
        run(
            &refining,
            two.clone(),
            &[0.5],
            video(),
            Some(e),
            &layout,
            &scope,
        )
    };
    assert_eq!(estimate(x.clone()).unwrap_err().argument(), "estimate");
    assert!(estimate(two.clone()).is_ok());
    assert_eq!(
        run(
            &model,
            two.clone(),
            &[0.5],
            video(),
            Some(two.clone()),
            &layout,
            &scope
        )
        .unwrap_err()
        .argument(),
        "estimate"
    );
}

#[test]
fn continuity_separates_clip_boundaries_from_the_rest() {
    let frame = |v: u8| vec![v; 12];
    let video = Frames {
        height: 2,
        width: 2,
        frames: vec![
            frame(10),
            frame(12),
            frame(14),
            frame(40),
            frame(42),
            frame(44),
        ],
    };
    let c = clip_continuity(&video, &[0, 3], 1);
    assert_eq!(c.across, 26.0);
    assert_eq!(c.within, 2.0);
    // With two-frame patches only the pairs (1, 2) and (3, 4) count; (3, 4) is not compared.
    let video = Frames {
        height: 2,
        width: 2,
        frames: vec![
            frame(10),
            frame(11),
            frame(15),
            frame(16),
            frame(40),
            frame(41),
        ],
    };
    let c = clip_continuity(&video, &[0, 4], 2);
    assert_eq!(c.across, 24.0);
    assert_eq!(c.within, 4.0);
}
