use burn::tensor::{
    Device, Distribution, Tensor, TensorData, activation::softmax, module::attention,
    ops::AttentionModuleOptions,
};
use burn_ctx_parallel::CommError;
use burn_ctx_parallel::transport::run_in_process;
use burn_ctx_parallel::{
    ClipLayout, Communicator, DualScopeConfig, DualScopePlan, clip_halos,
    dual_scope_bytes_per_layer,
};

const N: usize = 3; // tokens per frame

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// Cuts `[B, H, T·N, D]` into the clips of `layout`.
fn split(x: &Tensor<4>, layout: &ClipLayout) -> Vec<Tensor<4>> {
    (0..layout.clips())
        .map(|c| {
            x.clone()
                .narrow(2, layout.frame_offset(c) * N, layout.frames(c) * N)
        })
        .collect()
}

/// The clips of rank `rank`.
fn split_for(x: &Tensor<4>, layout: &ClipLayout, rank: usize) -> Vec<Tensor<4>> {
    layout
        .clips_of(rank)
        .map(|c| {
            x.clone()
                .narrow(2, layout.frame_offset(c) * N, layout.frames(c) * N)
        })
        .collect()
}

/// The whole video on one device, written from the definition: keys are every frame
/// (visible within the window) followed by the global frames (visible outside it), with the
/// scope biases, through an explicit softmax.
fn reference(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    frames: usize,
    config: &DualScopeConfig,
    sigmas: &[f64],
) -> Tensor<4> {
    let device = q.device();
    let [b, h, s, d] = q.dims();
    let global = config.global_frame_ids(frames);
    let key_frames: Vec<(usize, bool)> = (0..frames)
        .map(|f| (f, false))
        .chain(global.iter().map(|&f| (f, true)))
        .collect();
    let sk = key_frames.len() * N;
    let mut bias = Vec::with_capacity(b * s * sk);
    for &sigma in sigmas {
        let (local_bias, global_bias) = if sigma >= config.switch_sigma {
            (0.0, config.scope_bias)
        } else {
            (config.scope_bias, 0.0)
        };
        for i in 0..s {
            for j in 0..sk {
                let (fk, is_global) = key_frames[j / N];
                let near = (i / N).abs_diff(fk) <= config.window;
                bias.push(match (near, is_global) {
                    (true, false) => local_bias as f32,
                    (false, true) => global_bias as f32,
                    _ => -1e30,
                });
            }
        }
    }
    let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, 1, s, sk]), &device);
    let pick = |x: Tensor<4>| {
        let idx: Vec<i64> = key_frames
            .iter()
            .flat_map(|&(f, _)| (f * N..(f + 1) * N).map(|i| i as i64))
            .collect();
        x.select(2, Tensor::from_data(TensorData::new(idx, [sk]), &device))
    };
    let scores = q.matmul(pick(k).swap_dims(2, 3)) / (d as f64).sqrt() + bias.expand([b, h, s, sk]);
    softmax(scores, 3).matmul(pick(v))
}

fn data(device: &Device, b: usize, frames: usize) -> [Tensor<4>; 3] {
    [0, 1, 2].map(|_| random([b, 2, frames * N, 8], device))
}

#[test]
fn one_clip_with_a_window_over_it_is_dense_attention() {
    let device = Device::flex();
    let comm = Communicator::single(device.clone());
    let layout = ClipLayout::uniform(1, 5, 1).unwrap();
    let [q, k, v] = data(&device, 2, 5);
    let config = DualScopeConfig::new()
        .with_window(5)
        .with_global_frames(2)
        .with_scope_bias(0.0);
    let plan = DualScopePlan::new(&comm, &layout, N, &config, &[0.9, 0.1]).unwrap();
    let out = plan
        .attend(vec![q.clone()], vec![k.clone()], vec![v.clone()])
        .unwrap()
        .remove(0);
    let dense = attention(
        q.clone(),
        k.clone(),
        v.clone(),
        None,
        None,
        AttentionModuleOptions::default(),
    );
    assert!(max_diff(out.clone(), dense) < 1e-5);
    assert!(max_diff(out, reference(q, k, v, 5, &config, &[0.9, 0.1])) < 1e-5);
}

#[test]
fn clips_over_ranks_equal_the_whole_video_on_one_device() {
    let device = Device::flex();
    // (clip lengths, ranks): one per rank, uneven, several per rank, a non-power-of-two.
    let layouts = [
        (vec![9], 1),
        (vec![4, 5], 2),
        (vec![3, 4, 2], 3),
        (vec![2, 3, 2, 2, 3], 2),
        (vec![3, 3, 3, 3], 4),
        (vec![2, 2, 2, 2, 2, 2], 3),
    ];
    let sigmas = [0.8, 0.2]; // one sample in each phase
    for (clip_frames, world) in layouts {
        let layout = ClipLayout::new(clip_frames.clone(), world).unwrap();
        let frames = layout.total_frames();
        let [q, k, v] = data(&device, 2, frames);
        for (window, global, bias) in [(0, 0, 0.0), (1, 3, 10.0), (2, 4, 2.0), (2, 0, 0.0)] {
            if window > *clip_frames.iter().min().unwrap() {
                continue;
            }
            let config = DualScopeConfig::new()
                .with_window(window)
                .with_global_frames(global)
                .with_scope_bias(bias);
            let per_rank = run_in_process(
                &vec![device.clone(); world],
                |comm| -> Result<_, CommError> {
                    let plan = DualScopePlan::new(&comm, &layout, N, &config, &sigmas)?;
                    let rank = comm.rank();
                    Ok(Tensor::cat(
                        plan.attend(
                            split_for(&q, &layout, rank),
                            split_for(&k, &layout, rank),
                            split_for(&v, &layout, rank),
                        )?,
                        2,
                    ))
                },
            );
            let out = Tensor::cat(per_rank.into_iter().map(Result::unwrap).collect(), 2);
            let expected = reference(q.clone(), k.clone(), v.clone(), frames, &config, &sigmas);
            let err = max_diff(out, expected);
            assert!(
                err < 1e-4,
                "clips {clip_frames:?} on {world} ranks, window {window}, {global} global, bias {bias}: error {err}"
            );
        }
    }
}

#[test]
fn gradients_through_clips_equal_the_whole_video() {
    let device = Device::flex();
    // Three clips on one rank (the spread over ranks is compared with this in `spmd_cases`).
    let layout = ClipLayout::new(vec![3, 2, 3], 1).unwrap();
    let comm = Communicator::single(device.clone());
    let config = DualScopeConfig::new()
        .with_window(2)
        .with_global_frames(3)
        .with_scope_bias(1.5);
    let sigmas = [0.7];
    let [q, k, v] = data(&device, 1, 8);
    let weight = random(q.dims(), &device);
    let grads = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
        let [q, k, v] = [&q, &k, &v].map(|x| x.clone().autodiff().require_grad());
        let g = (f(q.clone(), k.clone(), v.clone()) * weight.clone().autodiff())
            .sum()
            .backward();
        [
            q.grad(&g).unwrap(),
            k.grad(&g).unwrap(),
            v.grad(&g).unwrap(),
        ]
    };
    let plan = DualScopePlan::new(&comm, &layout, N, &config, &sigmas).unwrap();
    let sharded = grads(&|q, k, v| {
        Tensor::cat(
            plan.attend(split(&q, &layout), split(&k, &layout), split(&v, &layout))
                .unwrap(),
            2,
        )
    });
    let whole = grads(&|q, k, v| reference(q, k, v, 8, &config, &sigmas));
    for (name, (a, b)) in ["dq", "dk", "dv"]
        .iter()
        .zip(sharded.into_iter().zip(whole))
    {
        let err = max_diff(a, b);
        assert!(err < 1e-4, "{name}: error {err}");
    }
}

#[test]
fn the_edges_of_the_video_are_masked_not_padded() {
    let device = Device::flex();
    let layout = ClipLayout::uniform(3, 3, 1).unwrap();
    let comm = Communicator::single(device.clone());
    let config = DualScopeConfig::new().with_window(1).with_global_frames(0);
    let [q, k, v] = data(&device, 1, 9);
    let plan = DualScopePlan::new(&comm, &layout, N, &config, &[0.1]).unwrap();
    let run = |v: &Tensor<4>| {
        plan.attend(split(&q, &layout), split(&k, &layout), split(v, &layout))
            .unwrap()
    };
    let out = run(&v);
    // Frame 0 sees frames 0 and 1 only: its output is the softmax over those keys alone.
    let keys = 2 * N;
    let q0 = q.clone().narrow(2, 0, N);
    let alone = attention(
        q0,
        k.clone().narrow(2, 0, keys),
        v.clone().narrow(2, 0, keys),
        None,
        None,
        AttentionModuleOptions::default(),
    );
    assert!(max_diff(out[0].clone().narrow(2, 0, N), alone) < 1e-5);
    // Changing frame 2's values leaves frame 0 alone and moves frame 1, its neighbour.
    let bump = Tensor::<4>::ones([1, 2, N, 8], &device) * 5.0;
    let moved = run(&v.clone().slice_assign(
        [0..1, 0..2, 2 * N..3 * N, 0..8],
        v.clone().narrow(2, 2 * N, N) + bump,
    ));
    assert!(
        max_diff(
            moved[0].clone().narrow(2, 0, N),
            out[0].clone().narrow(2, 0, N)
        ) == 0.0
    );
    assert!(
        max_diff(
            moved[0].clone().narrow(2, N, N),
            out[0].clone().narrow(2, N, N)
        ) > 1e-3
    );
    // The last frame of the video sees frames 7 and 8 only.
    let q8 = q.narrow(2, 8 * N, N);
    let alone = attention(
        q8,
        k.narrow(2, 7 * N, keys),
        v.narrow(2, 7 * N, keys),
        None,
        None,
        AttentionModuleOptions::default(),
    );
    assert!(max_diff(out[2].clone().narrow(2, 2 * N, N), alone) < 1e-5);
}

#[test]
fn communication_per_layer_does_not_grow_with_the_video() {
    let device = Device::flex();
    let config = DualScopeConfig::new().with_window(2).with_global_frames(4);
    let (b, h, d) = (1, 2, 8);
    let mut measured = Vec::new();
    for (clips, frames_per_clip, world) in [(3, 3, 3), (3, 6, 3), (6, 3, 3), (6, 8, 3)] {
        let layout = ClipLayout::uniform(clips, frames_per_clip, world).unwrap();
        let [q, k, v] = data(&device, b, layout.total_frames());
        let per_rank = run_in_process(
            &vec![device.clone(); world],
            |comm| -> Result<_, CommError> {
                let plan = DualScopePlan::new(&comm, &layout, N, &config, &[0.5])?;
                let rank = comm.rank();
                plan.attend(
                    split_for(&q, &layout, rank),
                    split_for(&k, &layout, rank),
                    split_for(&v, &layout, rank),
                )?;
                Ok(comm.stats().bytes)
            },
        );
        let bytes: u64 = per_rank.into_iter().map(Result::unwrap).sum();
        // Two halos per rank boundary and every global frame to the ranks that lack it.
        let frame_bytes = (2 * b * h * d * N * 4) as u64;
        let formula = ((world as u64 - 1)
            * (2 * config.window as u64 + config.global_frames as u64))
            * frame_bytes;
        assert_eq!(
            bytes, formula,
            "{clips} clips of {frames_per_clip} frames on {world} ranks"
        );
        assert_eq!(
            bytes,
            dual_scope_bytes_per_layer(&layout, N, &config, b, h, d, 4)
        );
        measured.push(bytes);
    }
    assert!(measured.windows(2).all(|w| w[0] == w[1]), "{measured:?}");
}

#[test]
fn bad_layouts_and_inputs_are_named_errors() {
    let device = Device::flex();
    assert_eq!(
        ClipLayout::new(vec![4], 2).unwrap_err().argument(),
        "clip_frames"
    );
    assert_eq!(
        ClipLayout::new(vec![4, 0], 2).unwrap_err().argument(),
        "clip_frames"
    );
    let comm = Communicator::single(device.clone());
    let layout = ClipLayout::uniform(2, 2, 1).unwrap();
    let wide = DualScopeConfig::new().with_window(3);
    assert_eq!(
        DualScopePlan::new(&comm, &layout, N, &wide, &[0.5])
            .err()
            .unwrap()
            .argument(),
        "config.window"
    );
    let two_ranks = ClipLayout::uniform(2, 2, 2).unwrap();
    assert_eq!(
        DualScopePlan::new(&comm, &two_ranks, N, &DualScopeConfig::new(), &[0.5])
            .err()
            .unwrap()
            .argument(),
        "layout"
    );
    let plan = DualScopePlan::new(&comm, &layout, N, &DualScopeConfig::new(), &[0.5]).unwrap();
    let [q, k, v] = data(&device, 1, 4);
    assert_eq!(
        plan.attend(vec![q.clone()], vec![k.clone()], vec![v.clone()])
            .unwrap_err()
            .argument(),
        "q"
    );
    let short = q.clone().narrow(2, 0, N);
    let err = plan
        .attend(
            vec![short, q.clone()],
            split(&k, &layout),
            split(&v, &layout),
        )
        .unwrap_err();
    assert_eq!(err.argument(), "q");
    assert!(err.to_string().contains("clip 0"), "{err}");
    // Clip halos: one tensor per clip of this rank, a halo no longer than the shortest clip.
    let x: Vec<Tensor<2>> = (0..2)
        .map(|_| Tensor::random([2, 4], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    assert_eq!(
        clip_halos(&comm, &layout, &x, 0, 3).unwrap_err().argument(),
        "halo"
    );
    assert_eq!(
        clip_halos(&comm, &layout, &x[..1], 0, 1)
            .unwrap_err()
            .argument(),
        "parts"
    );
    assert_eq!(
        clip_halos(&comm, &two_ranks, &x, 0, 1)
            .unwrap_err()
            .argument(),
        "layout"
    );
}
