use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_ctx_parallel::Communicator;
use burn_dit::DitError;
use burn_dit::data::SplitMix;
use burn_dit::flow::{add_noise, velocity_target};
use burn_dit::train::optim::{
    DitOptimizer, MUON_PARAMS, ODD_BLOCKS_OPTIMIZER_FILE, OPTIMIZER_FILE, OptimizerKind,
    dit_optimizer,
};
use burn_dit::train::{CheckpointError, StepLog, TrainConfig, TrainError, Trainer, label_ids};
use burn_dit::{AttentionKind, VideoDit};
use burn_sparse_attn::dsv::{DsvHost, DsvLayerStats};

use crate::common::*;
use burn_dit::{ForwardContext, VideoDitInput};

#[test]
fn loss_falls_on_a_small_problem() {
    let mut config = micro_train(micro_dsv());
    config.dataset_size = 4;
    config.lr = 3e-3;
    config.steps = 40;
    let mut trainer = Trainer::new(config, &Device::flex()).unwrap();
    let losses: Vec<f32> = (0..40).map(|_| trainer.train_step().loss).collect();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(
        mean(&losses[30..]) < 0.8 * mean(&losses[..10]),
        "loss did not fall: {losses:?}"
    );
    let stats = trainer.model().dsv_layers()[0].stats();
    assert_eq!(stats.step, 40);
    assert!(stats.predictor_loss.is_some() && stats.head_sparsity.is_some());
}

#[test]
fn self_conditioning_trains_and_resumes_exactly() {
    let mut config = train_with(OptimizerKind::Muon);
    config.model.self_condition = true;
    resumes_exactly(config.clone(), "self-conditioning");
    // The estimate is made without gradient and without counting a DSV step.
    let mut trainer = Trainer::new(config, &Device::flex()).unwrap();
    let losses: Vec<f32> = (0..4).map(|_| trainer.train_step().loss).collect();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert_eq!(trainer.model().dsv_layers()[0].stats().step, 4);
}

fn train_with(optimizer: OptimizerKind) -> TrainConfig {
    let mut config = micro_train(micro_dsv());
    config.optimizer = optimizer;
    config
}

#[test]
fn checkpoints_resume_exactly() {
    resumes_exactly(train_with(OptimizerKind::AdamW), "adamw");
    resumes_exactly(train_with(OptimizerKind::Muon), "muon");
}

fn resumes_exactly(config: TrainConfig, name: &str) {
    let dir = std::env::temp_dir().join(format!("dit-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::flex();
    let mut straight = Trainer::new(config.clone(), &device).unwrap();
    for _ in 0..2 {
        straight.train_step();
    }
    straight.save_checkpoint(&dir).unwrap();
    for _ in 0..2 {
        straight.train_step();
    }

    let mut resumed = Trainer::new(config, &device).unwrap();
    resumed.resume(&dir).unwrap();
    assert_eq!(resumed.step(), 2);
    for _ in 0..2 {
        resumed.train_step();
    }
    let (a, b) = (params(&straight), params(&resumed));
    let worst = worst_gap(&a, &b);
    assert!(worst < 1e-5, "{name}: resumed run drifted by {worst}");
    let losses = |t: &Trainer| {
        t.history()
            .iter()
            .map(|l| (l.step, l.loss, l.predictor_loss, l.mean_sparsity))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&straight), losses(&resumed));
    let (sa, sb) = (
        straight.model().dsv_layers()[0].stats(),
        resumed.model().dsv_layers()[0].stats(),
    );
    assert_eq!(
        (sa.step, sa.stage, &sa.head_sparsity),
        (sb.step, sb.stage, &sb.head_sparsity)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_checkpoints_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("dit-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::flex();
    let mut trainer = Trainer::new(micro_train(micro_dsv()), &device).unwrap();
    trainer.train_step();
    let ckpt = trainer.save_checkpoint(&dir).unwrap();

    // Another model shape: refused by name, nothing loaded.
    let mut other = Trainer::new(micro_train(AttentionKind::Dense), &device).unwrap();
    match other.resume(&dir) {
        Err(CheckpointError::Mismatch { field, .. }) if field.starts_with("model.") => {}
        other => panic!("expected a model mismatch, got {other:?}"),
    }
    assert_eq!(other.step(), 0);

    // Another optimiser: refused by name (its state would not fit).
    let mut adamw = Trainer::new(train_with(OptimizerKind::AdamW), &device).unwrap();
    match adamw.resume(&dir) {
        Err(CheckpointError::Mismatch { field, .. }) if field == "optimizer" => {}
        other => panic!("expected an optimizer mismatch, got {other:?}"),
    }
    assert_eq!(adamw.step(), 0);

    // Corrupt weights: refused (they fail the manifest), the trainer keeps its state, the
    // file stays as it was.
    let garbage = b"not a burnpack file".to_vec();
    std::fs::write(ckpt.join("model.bpk"), &garbage).unwrap();
    let mut fresh = Trainer::new(micro_train(micro_dsv()), &device).unwrap();
    let before = params(&fresh);
    match fresh.resume(&dir) {
        Err(CheckpointError::Damaged { file, .. }) => assert!(file.ends_with("model.bpk")),
        other => panic!("expected a corrupt checkpoint error, got {other:?}"),
    }
    assert_eq!(fresh.step(), 0);
    let after = params(&fresh);
    // Bitwise: DSV's schedule holds NaN for "no predictor loss yet".
    let changed = before
        .iter()
        .zip(&after)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(
        changed.is_none() && before.len() == after.len(),
        "a failed resume changed parameter {changed:?} of {}",
        before.len()
    );
    assert_eq!(std::fs::read(ckpt.join("model.bpk")).unwrap(), garbage);

    // A missing checkpoint folder says which file is missing.
    assert!(matches!(
        fresh.resume(&dir.join("nowhere")),
        Err(CheckpointError::Io(..))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn learning_rate_warms_up_then_follows_a_cosine_to_its_floor() {
    let mut c = micro_train(AttentionKind::Dense);
    (c.lr, c.warmup_steps, c.steps, c.final_lr_fraction) = (1e-3, 10, 110, 0.1);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(c.lr_at(0), 1e-4) && close(c.lr_at(4), 5e-4) && close(c.lr_at(9), 1e-3));
    // Halfway through the cosine the rate is midway between peak and floor.
    assert!(close(c.lr_at(59), 0.55e-3), "{}", c.lr_at(59));
    assert!(close(c.lr_at(109), 1e-4) && close(c.lr_at(500), 1e-4));
    assert!(
        (10..109).all(|s| c.lr_at(s + 1) <= c.lr_at(s)),
        "not monotone after warm-up"
    );
    c.final_lr_fraction = 1.0;
    assert!(
        (9..200).all(|s| close(c.lr_at(s), 1e-3)),
        "fraction 1 must keep the rate constant"
    );
}

#[test]
fn muon_trains_exactly_the_blocks_weight_matrices() {
    use burn::module::{ModuleVisitor, Param, ParamGroup};
    use burn::tensor::Tensor;
    struct Matched {
        path: Vec<String>,
        group: ParamGroup,
        all: usize,
        muon: Vec<(String, usize)>,
    }
    impl ModuleVisitor for Matched {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            self.all += 1;
            if self.group.matches(&param.id, Some(&path)) {
                self.muon.push((path, D));
            }
        }
    }
    let config = micro_model(micro_dsv());
    let model = config.init(&Device::flex());
    let mut visitor = Matched {
        path: Vec::new(),
        group: ParamGroup::from_regex(MUON_PARAMS).unwrap(),
        all: 0,
        muon: Vec::new(),
    };
    model.visit(&mut visitor);
    // Seven projections per block: self-attention qkv and out, cross-attention q, kv and out, two MLP layers.
    assert_eq!(visitor.muon.len(), 7 * config.depth, "{:?}", visitor.muon);
    assert!(
        visitor.muon.iter().all(|(path, rank)| *rank == 2
            && path.starts_with("blocks.")
            && path.ends_with(".weight")),
        "{:?}",
        visitor.muon
    );
    assert!(
        visitor
            .muon
            .iter()
            .all(|(path, _)| !path.contains("predictor")),
        "the DSV predictors have their own optimiser"
    );
    assert!(
        visitor.all > visitor.muon.len() + 20,
        "AdamW keeps the embeddings, biases, norms and head ({} parameters in all)",
        visitor.all
    );
}

#[test]
fn a_run_config_without_an_optimizer_field_means_adamw() {
    let config = train_with(OptimizerKind::Muon);
    let mut json: serde_json::Value = serde_json::to_value(&config).unwrap();
    json.as_object_mut()
        .unwrap()
        .remove("optimizer")
        .expect("the field is written");
    let read: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(read.optimizer, OptimizerKind::AdamW);
}

/// Every trained weight of the live model but the DSV predictors', which (like the DSV
/// profiler's sparsity, a running state) learn from the first replica's share only.
fn host_params(trainer: &Trainer) -> Vec<f32> {
    struct Collect<'a>(&'a mut Vec<f32>, Vec<burn::module::ParamId>);
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            if param.val().is_require_grad() && !self.1.contains(&param.id) {
                self.0.extend(values(param.val()));
            }
        }
    }
    let predictors = trainer
        .model()
        .dsv_layers()
        .iter()
        .flat_map(|l| l.predictor_param_ids())
        .collect();
    let mut out = Vec::new();
    trainer.model().visit(&mut Collect(&mut out, predictors));
    out
}

/// Trainers of `config` (which may differ in replicas) that all start from the same saved
/// initial state: tests run in parallel threads that share the device's random generator,
/// so two fresh inits in one test binary can differ.
struct SameStart(std::path::PathBuf);

impl SameStart {
    fn new(name: &str, config: TrainConfig, device: &Device) -> Self {
        let dir =
            std::env::temp_dir().join(format!("dit-same-start-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Trainer::new(config, device)
            .unwrap()
            .save_checkpoint(&dir)
            .unwrap();
        Self(dir)
    }

    fn trainer(&self, config: TrainConfig, device: &Device) -> Trainer {
        let mut trainer = Trainer::new(config, device).unwrap();
        trainer.resume(&self.0).unwrap();
        trainer
    }

    /// Three steps on the ranks of a group of `world` threads that `join` makes of each
    /// rank's trainer: rank 0 starts here, the others from their own init (which joining
    /// replaces with rank 0's weights). Every rank's weights, logs and DSV layer stats.
    fn ranks(
        &self,
        world: usize,
        config: impl Fn() -> TrainConfig + Sync,
        device: &Device,
        join: impl Fn(Trainer, Communicator) -> Result<Trainer, DitError> + Sync,
    ) -> Vec<RankRun> {
        burn_ctx_parallel::transport::run_in_process::<_, DitError>(
            &vec![device.clone(); world],
            |comm| {
                let trainer = if comm.rank() == 0 {
                    self.trainer(config(), device)
                } else {
                    Trainer::new(config(), device).unwrap()
                };
                let mut trainer = join(trainer, comm)?;
                let logs = (0..3)
                    .map(|_| trainer.try_train_step())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| match e {
                        TrainError::Dit(e) => e,
                        other => panic!("{other}"),
                    })?;
                let dsv = trainer
                    .model()
                    .dsv_layers()
                    .iter()
                    .map(|l| l.stats())
                    .collect();
                Ok((params(&trainer), logs, dsv))
            },
        )
        .into_iter()
        .map(Result::unwrap)
        .collect()
    }
}

/// One rank's weights, step logs and DSV layer stats.
type RankRun = (Vec<f32>, Vec<StepLog>, Vec<DsvLayerStats>);

impl Drop for SameStart {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn replicas_train_like_one_model() {
    let device = Device::flex();
    let start = SameStart::new("replicas", train_with(OptimizerKind::Muon), &device);
    let run = |replicas: usize| {
        let mut config = train_with(OptimizerKind::Muon);
        config.replicas = replicas;
        let mut trainer = start.trainer(config, &device);
        let logs: Vec<_> = (0..4).map(|_| trainer.train_step()).collect();
        (trainer, logs)
    };
    let (one, one_logs) = run(1);
    let one_params = host_params(&one);
    // Batch 4 in shares of 2+2 and (uneven) 2+1+1.
    for replicas in [2, 3] {
        let (many, logs) = run(replicas);
        assert_same_steps(&one_logs, &logs, 1e-4, &format!("{replicas} replicas"));
        let params = host_params(&many);
        assert_eq!(params.len(), one_params.len());
        let worst = worst_gap(&one_params, &params);
        assert!(
            worst < 1e-4,
            "{replicas} replicas drifted from one model by {worst}"
        );
        // Only the model itself counts DSV steps and profiles; replicas follow its schedule.
        for layer in many.model().dsv_layers() {
            let stats = layer.stats();
            assert_eq!(stats.step, 4, "{replicas} replicas");
            assert!(stats.head_sparsity.is_some() && stats.predictor_loss.is_some());
        }
    }
}

#[test]
fn data_parallel_ranks_train_like_one_process() {
    let device = Device::flex();
    let tiny_policy = AttentionKind::Dsv(
        burn_dit::DsvPolicy::new()
            .with_min_sparse_len(0)
            .with_query_cube([1, 4, 4])
            .with_sparsity_threshold(0.4)
            .with_switch_loss(0.05)
            .with_sample_stride(8)
            .with_profile_every(10),
    );
    for attention in [AttentionKind::Dense, micro_dsv(), tiny_policy] {
        let config = |replicas: usize| {
            let mut config = micro_train(attention.clone());
            config.replicas = replicas;
            config
        };
        // One process with shares 2 + 2 against two ranks of one share each.
        let start = SameStart::new(
            &format!("dp-{}", format!("{attention:?}").len()),
            config(1),
            &device,
        );
        let mut one = start.trainer(config(2), &device);
        let one_logs: Vec<_> = (0..3).map(|_| one.train_step()).collect();
        let ranks = start.ranks(
            2,
            || config(1),
            &device,
            |trainer, comm| trainer.with_communicator(comm),
        );
        let one_params = params(&one);
        let one_dsv: Vec<_> = one.model().dsv_layers().iter().map(|l| l.stats()).collect();
        for (rank, (params, logs, dsv)) in ranks.into_iter().enumerate() {
            assert_same_steps(&one_logs, &logs, 1e-5, &format!("rank {rank}"));
            for (a, b) in one_logs.iter().zip(&logs) {
                assert_eq!(
                    a.predictor_loss, b.predictor_loss,
                    "rank {rank}, step {}",
                    a.step
                );
            }
            let worst = worst_gap(&one_params, &params);
            assert!(
                worst < 1e-5,
                "rank {rank} drifted from the one-process run by {worst}"
            );
            assert_eq!(dsv.len(), one_dsv.len());
            for (a, b) in one_dsv.iter().zip(&dsv) {
                assert_eq!(
                    (a.step, a.stage, &a.head_sparsity, a.predictor_loss),
                    (b.step, b.stage, &b.head_sparsity, b.predictor_loss),
                    "rank {rank}"
                );
            }
        }
    }
}

#[test]
fn sequence_parallel_ranks_train_like_one_process() {
    let device = Device::flex();
    let sparse_dsv = AttentionKind::Dsv(
        burn_dit::DsvPolicy::new()
            .with_min_sparse_len(0)
            .with_query_cube([1, 2, 2])
            .with_sparsity_threshold(0.0)
            .with_min_budget_fraction(0.25)
            .with_max_budget_fraction(0.25)
            .with_sample_stride(8)
            .with_profile_every(2),
    );
    // Dense attention as a ring; DSV in its dense stage (sharded predictor loss and
    // profile); DSV sparse with checkpointing over three uneven shards (1, 1, 2 frames).
    let cases = [
        (AttentionKind::Dense, false, 2),
        (micro_dsv(), false, 2),
        (sparse_dsv, true, 3),
    ];
    for (case, (attention, checkpointing, world)) in cases.into_iter().enumerate() {
        let config = || {
            let mut config = micro_train(attention.clone());
            config.replicas = 1;
            config.checkpointing = checkpointing;
            config
        };
        let sparse = |trainer: &mut Trainer| {
            if checkpointing {
                trainer.set_dsv_stage(burn_sparse_attn::dsv::DsvStage::Sparse);
            }
        };
        let start = SameStart::new(&format!("sp-{case}"), config(), &device);
        let mut one = start.trainer(config(), &device);
        sparse(&mut one);
        let one_logs: Vec<_> = (0..3).map(|_| one.train_step()).collect();
        let ranks = start.ranks(world, config, &device, |trainer, comm| {
            let mut trainer = trainer.with_sequence_parallel(comm)?;
            sparse(&mut trainer);
            Ok(trainer)
        });
        let one_params = params(&one);
        let one_dsv: Vec<_> = one.model().dsv_layers().iter().map(|l| l.stats()).collect();
        for (rank, (params, logs, dsv)) in ranks.into_iter().enumerate() {
            let what = format!("case {case}, rank {rank}");
            assert_same_steps(&one_logs, &logs, 1e-4, &what);
            for (a, b) in one_logs.iter().zip(&logs) {
                assert_eq!(a.sparse_layers, b.sparse_layers, "{what}");
                if let (Some(x), Some(y)) = (a.predictor_loss, b.predictor_loss) {
                    assert!(
                        (x - y).abs() < 1e-4 * x.abs().max(1.0),
                        "{what}: {x} vs {y}"
                    );
                }
            }
            let worst = worst_gap(&one_params, &params);
            assert!(
                worst < 1e-4,
                "{what} drifted from one process by {worst}: {one_dsv:?} vs {dsv:?}"
            );
            assert_eq!(dsv.len(), one_dsv.len());
            for (a, b) in one_dsv.iter().zip(&dsv) {
                assert_eq!((a.step, a.stage), (b.step, b.stage), "{what}");
                let (x, y) = (a.head_sparsity.clone(), b.head_sparsity.clone());
                let (x, y) = (x.expect("profiled"), y.expect("profiled"));
                for (x, y) in x.iter().zip(&y) {
                    assert!((x - y).abs() < 1e-4, "{what}: sparsity {x} vs {y}");
                }
            }
        }
        if checkpointing {
            assert!(
                one_logs.iter().all(|l| l.sparse_layers == 2),
                "sparse case runs sparse"
            );
        }
    }
}

#[test]
fn sequence_parallel_training_names_what_it_cannot_split() {
    let device = Device::flex();
    let single = || Communicator::single(device.clone());
    let mut config = micro_train(AttentionKind::Dense);
    config.replicas = 2;
    let err = Trainer::new(config, &device)
        .unwrap()
        .with_sequence_parallel(single())
        .err()
        .expect("replicas refused");
    assert!(err.to_string().contains("config.replicas"), "{err}");
    let mut config = micro_train(AttentionKind::Dense);
    config.replicas = 1;
    config.clip.frames = 2;
    let ranks = burn_ctx_parallel::transport::run_in_process::<_, DitError>(
        &vec![device.clone(); 3],
        |comm| {
            Ok(Trainer::new(config.clone(), &device)
                .unwrap()
                .with_sequence_parallel(comm)
                .err()
                .map(|e| e.to_string()))
        },
    );
    for rank in ranks {
        let err = rank.unwrap().expect("three ranks cannot split two frames");
        assert!(err.contains("at most 2 ranks"), "{err}");
    }
}

#[test]
fn a_run_config_without_replicas_means_one() {
    let config = train_with(OptimizerKind::Muon);
    assert_eq!(config.replicas, 2, "the tiny preset trains two replicas");
    let mut json: serde_json::Value = serde_json::to_value(&config).unwrap();
    json.as_object_mut()
        .unwrap()
        .remove("replicas")
        .expect("the field is written");
    let read: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(read.replicas, 1);
}

#[test]
fn the_optimizer_shards_update_like_one_optimizer() {
    let device = Device::flex().autodiff();
    let grads_of = |model: &VideoDit| {
        // Its own generator: the device's is shared with tests running beside this one.
        let x = SplitMix(5).normal_tensor([2, 3, 4, 16, 16], &device);
        let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, 0.8], [2]), &device);
        let cond = model.embed_labels(Tensor::<2, Int>::from_data(
            TensorData::new(vec![1i64, 4, 2, 5], [2, 2]),
            &device,
        ));
        let loss = model
            .forward(VideoDitInput::new(x, sigma, cond), &ForwardContext::whole())
            .unwrap()
            .square()
            .mean();
        GradientsParams::from_grads(loss.backward(), model)
    };
    let start = jittered(AttentionKind::Dense, &device);
    assert_eq!(start.blocks().len(), 2, "one block in each shard");
    let step_both = |one: &mut burn::optim::ModuleOptimizer,
                     sharded: &mut DitOptimizer,
                     (a, b): (VideoDit, VideoDit)| {
        // Fresh autodiff leaves for each: the two models start from the same tensors.
        let (a, b) = (a.valid().train(), b.valid().train());
        let (a, b) = (
            one.step(1e-2, a.clone(), grads_of(&a)),
            sharded.step(1e-2, b.clone(), grads_of(&b)),
        );
        assert_eq!(
            params_of(&a),
            params_of(&b),
            "the shards update exactly as one optimiser"
        );
        (a, b)
    };
    let mut one = dit_optimizer(OptimizerKind::Muon);
    let mut sharded = DitOptimizer::new(OptimizerKind::Muon);
    let models = (0..3).fold((start.clone(), start), |models, _| {
        step_both(&mut one, &mut sharded, models)
    });
    assert_ne!(
        params_of(&models.0),
        params_of(&jittered(AttentionKind::Dense, &device)),
        "the steps changed the model"
    );

    let dir = std::env::temp_dir().join(format!("dit-optimizer-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A missing file is named.
    let (file, _) = DitOptimizer::load(OptimizerKind::Muon, &dir)
        .err()
        .expect("nothing to load");
    assert_eq!(file, dir.join(OPTIMIZER_FILE));
    // Saved and loaded, the shards go on exactly (momentum included).
    sharded.save(&dir).unwrap();
    assert!(dir.join(ODD_BLOCKS_OPTIMIZER_FILE).exists());
    let mut reloaded = DitOptimizer::load(OptimizerKind::Muon, &dir).unwrap();
    let models = step_both(&mut one.clone(), &mut reloaded, models.clone());
    // A missing shard is named, not replaced by the other's file.
    std::fs::remove_file(dir.join(ODD_BLOCKS_OPTIMIZER_FILE)).unwrap();
    let (file, _) = DitOptimizer::load(OptimizerKind::Muon, &dir)
        .err()
        .expect("a shard is missing");
    assert_eq!(file, dir.join(ODD_BLOCKS_OPTIMIZER_FILE));
    // A checkpoint from before the split (one file, every parameter's state) loads into both.
    one.save(dir.join(OPTIMIZER_FILE)).unwrap();
    let mut legacy = DitOptimizer::load_unsharded(OptimizerKind::Muon, &dir).unwrap();
    step_both(&mut one, &mut legacy, models);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validation_loss_is_the_held_out_flow_matching_loss() {
    let device = Device::flex();
    let config = micro_train(micro_dsv());
    let mut trainer = Trainer::new(config.clone(), &device).unwrap();
    for _ in 0..2 {
        trainer.train_step();
    }
    let sigmas = [0.3, 0.8];
    let loss = trainer.validation_loss(2, &sigmas, 5).unwrap();
    assert_eq!(
        trainer.validation_loss(2, &sigmas, 5).unwrap(),
        loss,
        "the same inputs give the same loss"
    );
    assert_ne!(
        trainer.validation_loss(2, &sigmas, 6).unwrap(),
        loss,
        "the seed draws the noise"
    );
    assert_eq!(
        trainer.model().dsv_layers()[0].stats().step,
        2,
        "validation counts no DSV step"
    );

    // One (clip, noise level) at a time, from the documented inputs: held-out clip i (item
    // dataset_size + i), its labels, and noise drawn clip after clip from SplitMix(seed).
    let clip = config.clip;
    let clip_by_clip = |model: &VideoDit| {
        let mut rng = SplitMix(5);
        let mut losses = Vec::new();
        for i in 0..2 {
            let item = trainer.data().generate(config.dataset_size + i);
            let x0 = Tensor::<5>::from_data(
                TensorData::new(
                    item.pixels.clone(),
                    [1, 3, clip.frames, clip.height, clip.width],
                ),
                &device,
            );
            let noise = rng.normal_tensor(
                [sigmas.len(), 3, clip.frames, clip.height, clip.width],
                &device,
            );
            for (j, &s) in sigmas.iter().enumerate() {
                let noise = noise.clone().narrow(0, j, 1);
                let sigma = Tensor::<1>::from_floats([s as f32], &device);
                let x_t = add_noise(x0.clone(), noise.clone(), sigma.clone());
                let v = model
                    .forward(
                        VideoDitInput::new(
                            x_t,
                            sigma,
                            model.embed_labels(label_ids(&[(item.object, item.colour)], &device)),
                        ),
                        &ForwardContext::whole(),
                    )
                    .unwrap();
                losses.push(
                    (v - velocity_target(x0.clone(), noise))
                        .square()
                        .mean()
                        .into_scalar::<f32>(),
                );
            }
        }
        losses.iter().sum::<f32>() / losses.len() as f32
    };
    let expected = clip_by_clip(&trainer.model().valid());
    assert!(
        (loss - expected).abs() < 1e-5 * expected,
        "validation loss {loss}, clip by clip {expected}"
    );
    // The EMA weights' loss: the same inputs through the sampling weights.
    let ema_loss = trainer.ema_validation_loss(2, &sigmas, 5).unwrap();
    let ema_expected = clip_by_clip(trainer.ema());
    assert!(
        (ema_loss - ema_expected).abs() < 1e-5 * ema_expected,
        "EMA validation loss {ema_loss}, clip by clip {ema_expected}"
    );
    assert_ne!(
        ema_loss, loss,
        "the EMA weights are not the live ones after two steps"
    );

    let message = |r: Result<f32, burn_dit::DitError>| r.unwrap_err().to_string();
    assert!(message(trainer.validation_loss(0, &sigmas, 5)).contains("clips"));
    assert!(message(trainer.validation_loss(1, &[0.5, 1.5], 5)).contains("sigmas"));
    assert!(message(trainer.validation_loss(1, &[], 5)).contains("sigmas"));
    assert!(message(trainer.ema_validation_loss(0, &sigmas, 5)).contains("ema_validation_loss"));
}

#[test]
fn the_tiny_preset_can_go_sparse_on_its_own_clips() {
    // The main job's DSV policy must let its layers go sparse at the preset's clip length,
    // and its query cubes must tile the token grid.
    let config = TrainConfig::tiny(
        burn_dit::VideoDitConfig::tiny().with_attention(AttentionKind::tiny_dsv()),
    );
    let AttentionKind::Dsv(policy) = &config.model.attention else {
        panic!("tiny_dsv is DSV attention");
    };
    let p = config.model.patch;
    let grid = [
        config.clip.frames / p[0],
        config.clip.height / p[1],
        config.clip.width / p[2],
    ];
    let tokens: usize = grid.iter().product();
    assert!(
        tokens >= policy.min_sparse_len,
        "{tokens} tokens, sparse from {}",
        policy.min_sparse_len
    );
    assert!(
        grid.iter().zip(policy.query_cube).all(|(g, c)| g % c == 0),
        "{grid:?} by {:?}",
        policy.query_cube
    );
    assert_eq!(config.steps, 2700);
    assert_eq!(config.clone().with_steps(10).checkpoint_every, 5);
}

#[test]
fn the_report_states_the_runs_figures() {
    use burn_dit::media::Frames;
    use burn_dit::metrics::{ObjectClassifier, measure};
    use burn_dit::train::report::{LOSS_WINDOW, RunReport, smoothed_losses};
    let device = Device::flex();
    let mut trainer = Trainer::new(micro_train(micro_dsv()), &device).unwrap();
    for _ in 0..3 {
        trainer.train_step();
    }
    // Real clips measured as the samples would be: the figures are the metrics' own.
    let c = trainer.config().clone();
    let real: Vec<_> = (0..6).map(|i| trainer.data().generate(i)).collect();
    let labels: Vec<(usize, usize)> = real.iter().map(|r| (r.object, r.colour)).collect();
    let frames: Vec<Frames> = real
        .iter()
        .map(|r| Frames::from_chw(&r.pixels, c.clip.frames, c.clip.height, c.clip.width))
        .collect();
    let classifier = ObjectClassifier::for_set(trainer.data(), 10);
    let metrics = measure(&frames, &labels, None, &classifier);
    let report = RunReport::new(&trainer, 12.0, 0.25, &labels, &metrics, &metrics);

    let losses: Vec<f32> = trainer.history().iter().map(|l| l.loss).collect();
    let mean = losses.iter().sum::<f32>() / 3.0;
    assert_eq!(smoothed_losses(trainer.history(), LOSS_WINDOW), [mean]);
    assert_eq!(smoothed_losses(trainer.history(), 2).len(), 2);
    let json = report.to_json();
    assert_eq!(json["steps"], 3);
    assert_eq!(json["attention"], "dsv");
    assert_eq!(json["skipped_steps"], 0);
    assert_eq!(json["final_loss_smoothed"].as_f64().unwrap() as f32, mean);
    assert_eq!(json["dsv_layers"].as_array().unwrap().len(), c.model.depth);
    assert_eq!(json["samples"]["labels"].as_array().unwrap().len(), 6);

    let md = report.to_markdown();
    assert!(md.starts_with("# Tiny video DiT — DSV attention"), "{md}");
    assert!(md.contains(&format!(
        "3 steps in 12 s (0.25 steps/s), final loss (10-step mean) {mean:.4}"
    )));
    let layer_rows = md
        .lines()
        .filter(|l| l.starts_with("| 0 |") || l.starts_with("| 1 |"));
    assert_eq!(layer_rows.count(), c.model.depth);
    let colour = format!(
        "| colour matches the label | {0:.3} | {0:.3} |",
        metrics.colour_accuracy
    );
    assert!(md.contains(&colour), "{md}");
    // The confusion table counts every clip once, by the class asked for.
    let counted: usize = md
        .lines()
        .skip_while(|l| !l.starts_with("| asked \\ seen"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            l.split('|')
                .skip(2)
                .filter_map(|n| n.trim().parse::<usize>().ok())
        })
        .sum();
    assert_eq!(counted, 6, "{md}");
}
