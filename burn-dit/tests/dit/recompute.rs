use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use burn_dit::data::SplitMix;
use burn_dit::train::Trainer;
use burn_dit::{AttentionKind, DsvPolicy, DualScopeConfig, Prediction, VideoDit, VideoDitConfig};
use burn_sparse_attn::dsv::DsvStage;

use crate::common::*;
use burn_dit::{ForwardContext, VideoDitInput};

/// The largest gap between two sets of gradients relative to the largest gradient, after
/// checking that the same parameters have gradients in both.
fn gradient_gap(model: &VideoDit, a: &GradientsParams, b: &GradientsParams) -> f32 {
    struct Compare<'a> {
        a: &'a GradientsParams,
        b: &'a GradientsParams,
        gap: f32,
        scale: f32,
        compared: usize,
        path: Vec<String>,
    }
    impl ModuleVisitor for Compare<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.val().is_require_grad() {
                return;
            }
            let (a, b) = (self.a.get::<D>(param.id), self.b.get::<D>(param.id));
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                // The first block's aggregation gate: no block before it to aggregate.
                (None, None) => return,
                (a, b) => panic!(
                    "{} has a gradient plain: {}, checkpointed: {}",
                    self.path.join("."),
                    a.is_some(),
                    b.is_some()
                ),
            };
            self.scale = self.scale.max(a.clone().abs().max().into_scalar::<f32>());
            self.gap = self.gap.max(max_abs_diff(a, b));
            self.compared += 1;
        }
    }
    let mut compare = Compare {
        a,
        b,
        gap: 0.0,
        scale: 0.0,
        compared: 0,
        path: Vec::new(),
    };
    model.visit(&mut compare);
    assert!(compare.compared > 20 && compare.scale > 0.0);
    compare.gap / compare.scale
}

/// Plain and checkpointed gradients of one loss on `config`'s jittered model (aggregation
/// gates opened, so the aggregate's gradient path counts).
fn checkpointed_gap(config: VideoDitConfig) -> f32 {
    let device = Device::flex().autodiff();
    // `valid` then `train`: the jittered weights as leaves.
    let model = jittered_model(config.clone(), &device)
        .valid()
        .map(&mut OpenGates::default())
        .train();
    let mut rng = SplitMix(3);
    let x = rng.normal_tensor([2, 3, 4, 16, 16], &device);
    let target = rng.normal_tensor([2, 3, 4, 16, 16], &device);
    let sigma = Tensor::<1>::from_floats([0.7, 0.3], &device);
    let labels = Tensor::from_ints([[1, 4], [2, 5]], &device);
    let estimate = config
        .self_condition
        .then(|| Tensor::<5>::random([2, 3, 4, 16, 16], Distribution::Default, &device));
    let loss = |pred: Tensor<5>| (pred - target.clone()).square().mean();

    let pred = model
        .forward(
            VideoDitInput::new(x.clone(), sigma.clone(), model.embed_labels(labels.clone()))
                .with_estimate(estimate.clone()),
            &ForwardContext::whole(),
        )
        .unwrap();
    let plain = GradientsParams::from_grads(loss(pred).backward(), &model);
    let checkpointed = model
        .checkpointed_gradients(
            VideoDitInput::new(x, sigma, model.embed_labels(labels)).with_estimate(estimate),
            &ForwardContext::whole().with_tape(None),
            loss,
        )
        .unwrap();
    gradient_gap(&model, &plain, &checkpointed.gradients)
}

#[test]
fn checkpointed_gradients_equal_the_plain_backward() {
    let dense = micro_model(AttentionKind::Dense);
    let scope = DualScopeConfig::new()
        .with_window(2)
        .with_global_frames(2)
        .with_scope_bias(1.0);
    for (name, config) in [
        ("dense", dense.clone()),
        (
            "parallel block, aggregation, clean head, self-conditioning",
            dense
                .clone()
                .with_parallel_block(true)
                .with_feature_aggregation(true)
                .with_prediction(Prediction::Clean)
                .with_head_conv(true)
                .with_self_condition(true),
        ),
        ("aggregation", dense.with_feature_aggregation(true)),
        ("dual-scope", micro_model(AttentionKind::DualScope(scope))),
        ("DSV, dense stage", micro_model(micro_dsv())),
    ] {
        let gap = checkpointed_gap(config);
        assert!(
            gap < 1e-4,
            "{name}: gradients differ by {gap} of the largest"
        );
    }
}

#[test]
fn checkpointed_training_follows_the_plain_run_through_dsv_stages() {
    // Two steps in DSV's dense stage (the predictor learns, the profiler measures), then two
    // sparse: the checkpointed run must take the same steps, predictors included.
    let mut config = micro_train(AttentionKind::Dsv(
        DsvPolicy::new()
            .with_min_sparse_len(0)
            .with_sample_stride(8)
            .with_profile_every(2)
            .with_query_cube([1, 2, 2])
            .with_sparsity_threshold(0.0),
    ));
    config.replicas = 2;
    let device = Device::flex();
    let start = std::env::temp_dir().join(format!("dit-checkpointing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&start);
    Trainer::new(config.clone(), &device)
        .unwrap()
        .save_checkpoint(&start)
        .unwrap();
    let run = |checkpointing: bool| {
        let mut config = config.clone();
        config.checkpointing = checkpointing;
        let mut trainer = Trainer::new(config, &device).unwrap();
        trainer.resume(&start).unwrap();
        let mut logs = vec![trainer.train_step(), trainer.train_step()];
        trainer.set_dsv_stage(DsvStage::Sparse);
        logs.extend([trainer.train_step(), trainer.train_step()]);
        (params(&trainer), logs)
    };
    let (plain, plain_logs) = run(false);
    let (checkpointed, logs) = run(true);
    let _ = std::fs::remove_dir_all(&start);
    assert_eq!(
        logs.iter().map(|l| l.sparse_layers).collect::<Vec<_>>(),
        [0, 0, 2, 2],
        "both layers run sparse after the switch"
    );
    assert_same_steps(&plain_logs, &logs, 1e-4, "checkpointed");
    // The same share trains the predictors in both runs, so their losses agree too.
    for (a, b) in plain_logs.iter().zip(&logs) {
        assert_eq!(a.sparse_layers, b.sparse_layers);
        if let (Some(x), Some(y)) = (a.predictor_loss, b.predictor_loss) {
            assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "step {}", a.step);
        }
    }
    assert!(plain_logs.iter().any(|l| l.predictor_loss.is_some()));
    assert_eq!(plain.len(), checkpointed.len());
    let worst = worst_gap(&plain, &checkpointed);
    assert!(worst < 1e-4, "checkpointed weights drifted by {worst}");
}

#[test]
fn checkpointing_needs_an_autodiff_model_and_is_saved_in_the_run_config() {
    let device = Device::flex();
    let model = micro_model(AttentionKind::Dense).init(&device);
    let x = Tensor::<5>::zeros([1, 3, 4, 16, 16], &device);
    let sigma = Tensor::<1>::from_floats([0.5], &device);
    let cond = model.embed_labels(Tensor::from_ints([[1, 4]], &device));
    let err = model
        .checkpointed_gradients(
            VideoDitInput::new(x, sigma, cond).with_estimate(None),
            &ForwardContext::whole().with_tape(None),
            |p| p.sum(),
        )
        .err()
        .expect("a model without autodiff has no gradients");
    assert!(err.to_string().contains("autodiff"), "{err}");

    let mut config = micro_train(AttentionKind::Dense);
    config.checkpointing = true;
    let mut json = serde_json::to_value(&config).unwrap();
    let read: burn_dit::train::TrainConfig = serde_json::from_value(json.clone()).unwrap();
    assert!(read.checkpointing);
    json.as_object_mut().unwrap().remove("checkpointing");
    let old: burn_dit::train::TrainConfig = serde_json::from_value(json).unwrap();
    assert!(
        !old.checkpointing,
        "runs saved before the option trained without"
    );
}
