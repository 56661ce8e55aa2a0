use burn::module::Module;
use burn::tensor::Device;
use burn_dit::AttentionKind;
use burn_dit::train::{CheckpointError, Trainer};
use burn_sparse_attn::dsv::DsvHost;

use crate::common::*;

fn params(trainer: &Trainer) -> Vec<f32> {
    let mut out = Vec::new();
    struct Collect<'a>(&'a mut Vec<f32>);
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<D>>) {
            self.0.extend(param.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
        }
    }
    trainer.model().visit(&mut Collect(&mut out));
    out
}

#[test]
fn loss_falls_on_a_small_problem() {
    let mut config = micro_train(micro_dsv());
    config.dataset_size = 4;
    config.lr = 3e-3;
    config.steps = 40;
    let mut trainer = Trainer::new(config, &Device::flex()).unwrap();
    let losses: Vec<f32> = (0..40).map(|_| trainer.train_step().loss).collect();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(mean(&losses[30..]) < 0.8 * mean(&losses[..10]), "loss did not fall: {losses:?}");
    let stats = trainer.model().dsv_layers()[0].stats();
    assert_eq!(stats.step, 40);
    assert!(stats.predictor_loss.is_some() && stats.head_sparsity.is_some());
}

#[test]
fn checkpoints_resume_exactly() {
    let dir = std::env::temp_dir().join(format!("dit-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::flex();
    let mut straight = Trainer::new(micro_train(micro_dsv()), &device).unwrap();
    for _ in 0..2 {
        straight.train_step();
    }
    straight.save_checkpoint(&dir).unwrap();
    for _ in 0..2 {
        straight.train_step();
    }

    let mut resumed = Trainer::new(micro_train(micro_dsv()), &device).unwrap();
    resumed.resume(&dir).unwrap();
    assert_eq!(resumed.step(), 2);
    for _ in 0..2 {
        resumed.train_step();
    }
    let (a, b) = (params(&straight), params(&resumed));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "resumed run drifted by {worst}");
    let losses = |t: &Trainer| t.history().iter().map(|l| (l.step, l.loss, l.predictor_loss, l.mean_sparsity)).collect::<Vec<_>>();
    assert_eq!(losses(&straight), losses(&resumed));
    let (sa, sb) = (straight.model().dsv_layers()[0].stats(), resumed.model().dsv_layers()[0].stats());
    assert_eq!((sa.step, sa.stage, &sa.head_sparsity), (sb.step, sb.stage, &sb.head_sparsity));
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
        Err(CheckpointError::Mismatch { field: "model", .. }) => {}
        other => panic!("expected a model mismatch, got {other:?}"),
    }
    assert_eq!(other.step(), 0);

    // Corrupt weights: refused, the trainer keeps its state, the file stays as it was.
    let garbage = b"not a burnpack file".to_vec();
    std::fs::write(ckpt.join("model.bpk"), &garbage).unwrap();
    let mut fresh = Trainer::new(micro_train(micro_dsv()), &device).unwrap();
    let before = params(&fresh);
    match fresh.resume(&dir) {
        Err(CheckpointError::Corrupt(path, _)) => assert!(path.ends_with("model.bpk")),
        other => panic!("expected a corrupt checkpoint error, got {other:?}"),
    }
    assert_eq!(fresh.step(), 0);
    let after = params(&fresh);
    // Bitwise: DSV's schedule holds NaN for "no predictor loss yet".
    let changed = before.iter().zip(&after).position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(changed.is_none() && before.len() == after.len(), "a failed resume changed parameter {changed:?} of {}", before.len());
    assert_eq!(std::fs::read(ckpt.join("model.bpk")).unwrap(), garbage);

    // A missing checkpoint folder says which file is missing.
    assert!(matches!(fresh.resume(&dir.join("nowhere")), Err(CheckpointError::Io(..))));
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
    assert!((10..109).all(|s| c.lr_at(s + 1) <= c.lr_at(s)), "not monotone after warm-up");
    c.final_lr_fraction = 1.0;
    assert!((9..200).all(|s| close(c.lr_at(s), 1e-3)), "fraction 1 must keep the rate constant");
}
