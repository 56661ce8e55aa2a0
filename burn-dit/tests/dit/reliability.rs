//! Runs that never lose work: sealed and verified checkpoints, the run folder's lock and
//! clean-up, the divergence guard, and checkpoints that survive a kill at any moment.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleMapper, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor};
use burn_dit::AttentionKind;
use burn_dit::data::SplitMix;
use burn_dit::train::{
    CheckpointError, DivergencePolicy, IfDamaged, RunDir, RunDirError, RunMode, TrainConfig,
    TrainError, Trainer, load_for_sampling,
};

use crate::common::*;

fn losses(trainer: &Trainer) -> Vec<(usize, f32)> {
    trainer.history().iter().map(|l| (l.step, l.loss)).collect()
}

/// Flips `len` bytes in the middle of `path`.
fn flip_bytes(path: &Path, len: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let start = bytes.len() / 2 - len.min(bytes.len()) / 2;
    let end = (start + len).min(bytes.len());
    for b in &mut bytes[start..end] {
        *b ^= 0x5A;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_checkpoint_is_named_and_the_newest_intact_one_offered() {
    let dir = TempDir::new("damaged");
    let device = Device::flex();
    let config = micro_train(micro_dsv());
    let mut trainer = Trainer::new(config.clone(), &device).unwrap();
    trainer.train_step();
    let first = trainer.save_checkpoint(&dir.0).unwrap();
    trainer.train_step();
    let second = trainer.save_checkpoint(&dir.0).unwrap();
    assert!(second.join("manifest.json").exists());

    // 4 KiB of flipped bytes in the EMA weights: refused, naming the checkpoint and file.
    flip_bytes(&second.join("ema.bpk"), 4096);
    let mut fresh = Trainer::new(config.clone(), &device).unwrap();
    match fresh.resume(&dir.0) {
        Err(CheckpointError::Damaged {
            checkpoint,
            file,
            newest_intact,
            ..
        }) => {
            assert_eq!(checkpoint, second);
            assert!(file.ends_with("ema.bpk"), "{file:?}");
            assert_eq!(newest_intact.as_deref(), Some(first.as_path()));
        }
        other => panic!("expected a damaged checkpoint, got {other:?}"),
    }
    assert_eq!(fresh.step(), 0);
    assert!(matches!(
        load_for_sampling(&dir.0, &device, IfDamaged::Fail),
        Err(CheckpointError::Damaged { .. })
    ));

    // Asked to, the newest intact one loads; training on, the damaged folder is moved aside
    // and the step saved again, intact, with the same history as the straight run.
    let from = fresh
        .resume_with(&dir.0, IfDamaged::UseNewestIntact)
        .unwrap();
    assert_eq!((from, fresh.step()), (first.clone(), 1));
    fresh.train_step();
    assert_eq!(losses(&fresh), losses(&trainer));
    let again = fresh.save_checkpoint(&dir.0).unwrap();
    assert_eq!(again, second);
    assert!(
        dir.0
            .join("checkpoints/step_000002.damaged/ema.bpk")
            .exists()
    );
    let mut check = Trainer::new(config, &device).unwrap();
    check.resume(&dir.0).unwrap();
    assert_eq!(losses(&check), losses(&trainer));

    // A truncated file and a missing one are named too.
    let state = std::fs::read(second.join("state.json")).unwrap();
    std::fs::write(second.join("state.json"), &state[..state.len() / 2]).unwrap();
    assert!(matches!(
        check.resume(&dir.0),
        Err(CheckpointError::Damaged { .. })
    ));
    std::fs::write(second.join("state.json"), &state).unwrap();
    std::fs::remove_file(second.join("model.bpk")).unwrap();
    match check.resume(&dir.0) {
        Err(CheckpointError::Damaged { file, .. }) => assert!(file.ends_with("model.bpk")),
        other => panic!("expected a missing file to be named, got {other:?}"),
    }
}

#[test]
fn checkpoints_are_written_once_and_the_newest_k_kept() {
    let dir = TempDir::new("written-once");
    let device = Device::flex();
    let mut config = micro_train(AttentionKind::Dense);
    config.keep_checkpoints = 2;
    let mut trainer = Trainer::new(config, &device).unwrap();
    trainer.train_step();
    let first = trainer.save_checkpoint(&dir.0).unwrap();
    let before = std::fs::read(first.join("model.bpk")).unwrap();
    // Saving the same step again fails and leaves the checkpoint as it was.
    let err = trainer.save_checkpoint(&dir.0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("step_000001"), "{err}");
    assert_eq!(std::fs::read(first.join("model.bpk")).unwrap(), before);
    for _ in 0..2 {
        trainer.train_step();
        trainer.save_checkpoint(&dir.0).unwrap();
    }
    let left = names_in(&dir.0.join("checkpoints"));
    assert_eq!(left, ["latest", "step_000002", "step_000003"]);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("checkpoints/latest")).unwrap(),
        "step_000003"
    );
    // A save killed after its folder was renamed into place but before `latest` moved: the
    // finished newer checkpoint is the one resumed.
    std::fs::write(dir.0.join("checkpoints/latest"), "step_000002").unwrap();
    let mut resumed = Trainer::new(trainer.config().clone(), &device).unwrap();
    resumed.resume(&dir.0).unwrap();
    assert_eq!(resumed.step(), 3);
}

/// Sets every weight of one parameter to NaN.
struct PoisonFirst(bool);

impl ModuleMapper for PoisonFirst {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if std::mem::replace(&mut self.0, true) {
            return param;
        }
        param.map(|w| w * f32::NAN)
    }
}

#[test]
fn nan_weights_are_refused_by_name() {
    let dir = TempDir::new("nan-weights");
    let device = Device::flex();
    let config = micro_train(AttentionKind::Dense);
    let mut trainer = Trainer::new(config.clone(), &device).unwrap();
    trainer.train_step();
    let ckpt = trainer.save_checkpoint(&dir.0).unwrap();
    let poisoned = trainer.ema().clone().map(&mut PoisonFirst(false));
    poisoned.into_record().save(ckpt.join("ema.bpk")).unwrap();
    // Under the manifest the new bytes are damage.
    assert!(matches!(
        load_for_sampling(&dir.0, &device, IfDamaged::Fail),
        Err(CheckpointError::Damaged { .. })
    ));
    // A checkpoint of the format before manifests (nothing to verify against) is still
    // refused: the weights are checked after loading.
    std::fs::remove_file(ckpt.join("manifest.json")).unwrap();
    let state = std::fs::read_to_string(ckpt.join("state.json")).unwrap();
    std::fs::write(
        ckpt.join("state.json"),
        state.replacen("\"format\": 7", "\"format\": 6", 1),
    )
    .unwrap();
    match load_for_sampling(&dir.0, &device, IfDamaged::Fail) {
        Err(CheckpointError::NonFinite { file, parameter }) => {
            assert!(file.ends_with("ema.bpk"));
            assert!(!parameter.is_empty());
        }
        other => panic!("expected NaN weights to be refused, got {:?}", other.err()),
    }
    let _ = ModuleRecord::load(ckpt.join("ema.bpk")).unwrap();
}

#[test]
fn divergence_stops_the_run_before_anything_changes() {
    let device = Device::flex();
    let mut config = micro_train(AttentionKind::Dense);
    config.lr = 1e30;
    config.warmup_steps = 1;
    let mut trainer = Trainer::new(config.clone(), &device).unwrap();
    let error = (0..6)
        .find_map(|_| {
            let before = (params(&trainer), trainer.step(), trainer.history().len());
            match trainer.try_train_step() {
                Ok(_) => None,
                Err(e) => Some((e, before)),
            }
        })
        .expect("a learning rate of 1e30 diverges within 6 steps");
    let (error, (params_before, step_before, logged_before)) = error;
    match &error {
        TrainError::Diverged { step, quantity, .. } => {
            assert_eq!(*step, step_before + 1);
            assert!(
                quantity == "loss" || quantity.starts_with("gradient of `"),
                "{quantity}"
            );
        }
        other => panic!("expected divergence, got {other}"),
    }
    assert!(error.to_string().contains("not finite"), "{error}");
    assert_eq!(trainer.step(), step_before);
    assert_eq!(trainer.history().len(), logged_before);
    let after = params(&trainer);
    assert!(
        params_before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the diverged step changed the weights"
    );

    // Skipping instead: steps are marked skipped, nothing is applied, and the run stops
    // after the allowed number of skips in a row.
    config.on_divergence = DivergencePolicy::SkipStep {
        lr_factor: 0.5,
        max_consecutive: 2,
    };
    let mut skipping = Trainer::new(config.clone(), &device).unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        match skipping.try_train_step() {
            Ok(log) => outcomes.push(log.skipped),
            Err(TrainError::Diverged { .. }) => break,
            Err(other) => panic!("{other}"),
        }
    }
    let skipped = outcomes.iter().filter(|s| **s).count();
    assert_eq!(skipped, 2, "{outcomes:?}");
    assert_eq!(skipping.skipped_steps(), 2);
    assert!(outcomes.ends_with(&[true, true]), "{outcomes:?}");
    // The skips in a row survive a checkpoint: resumed, the run stops at the next divergence
    // instead of skipping again.
    let dir = std::env::temp_dir().join(format!("dit-skips-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    skipping.save_checkpoint(&dir).unwrap();
    let mut resumed = Trainer::new(config, &device).unwrap();
    resumed.resume(&dir).unwrap();
    let next = resumed.try_train_step();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(next, Err(TrainError::Diverged { .. })),
        "resumed after 2 skips in a row (the most allowed), got {:?}",
        next.map(|log| log.skipped)
    );
    let bad = DivergencePolicy::SkipStep {
        lr_factor: 0.0,
        max_consecutive: 1,
    };
    assert!(bad.check().is_err());
    // A trainer refuses it by name before any work.
    let mut config = micro_train(AttentionKind::Dense);
    config.on_divergence = bad;
    let message = Trainer::new(config, &device)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        message.contains("on_divergence") && message.contains("lr_factor"),
        "{message}"
    );
}

#[test]
fn a_run_folder_has_one_owner_and_is_cleaned_of_killed_saves() {
    let dir = TempDir::new("run-folder");
    let (run, removed) = RunDir::open(&dir.0, RunMode::Fresh).unwrap();
    assert!(removed.is_empty());
    // A second run on the folder fails at once, naming it.
    match RunDir::open(&dir.0, RunMode::Resume) {
        Err(e @ RunDirError::Locked(_)) => {
            assert!(e.to_string().contains(&dir.0.display().to_string()), "{e}")
        }
        other => panic!("expected the folder to be locked, got {other:?}"),
    }
    drop(run);
    // A run killed before its first checkpoint left an empty folder: a fresh run may start.
    drop(RunDir::open(&dir.0, RunMode::Fresh).unwrap());

    // What killed saves leave behind.
    let ckpts = dir.0.join("checkpoints");
    std::fs::create_dir_all(ckpts.join(".step_000005.4242")).unwrap();
    std::fs::write(ckpts.join(".step_000005.4242/model.bpk"), b"half").unwrap();
    std::fs::write(ckpts.join(".tmp-latest"), b"step_").unwrap();
    std::fs::create_dir_all(ckpts.join("step_000004")).unwrap();
    std::fs::write(ckpts.join("step_000004/ema.bpk.4242-1.tmp"), b"half").unwrap();
    std::fs::write(ckpts.join("step_000004/ema.bpk"), b"whole").unwrap();
    // A fresh run refuses a folder that holds a run; resuming cleans it up.
    match RunDir::open(&dir.0, RunMode::Fresh) {
        Err(RunDirError::NotEmpty(_, names)) => assert_eq!(names, ["checkpoints"]),
        other => panic!("expected a non-empty folder to be refused, got {other:?}"),
    }
    let (_run, removed) = RunDir::open(&dir.0, RunMode::Resume).unwrap();
    let names: Vec<String> = removed
        .iter()
        .map(|p| p.strip_prefix(&ckpts).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            ".step_000005.4242",
            ".tmp-latest",
            "step_000004/ema.bpk.4242-1.tmp"
        ]
    );
    assert!(ckpts.join("step_000004/ema.bpk").exists());
    drop(_run);
    // Starting over deletes the old run's checkpoints.
    drop(RunDir::open(&dir.0, RunMode::Overwrite).unwrap());
    assert!(!ckpts.join("step_000004").exists());

    // A folder that cannot be made is named at once.
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"").unwrap();
    match RunDir::open(&file.join("run"), RunMode::Fresh) {
        Err(e @ RunDirError::NotWritable(..)) => {
            assert!(e.to_string().contains("a-file/run"), "{e}")
        }
        other => panic!("expected an unwritable folder, got {other:?}"),
    }
}

/// The child side of the kill test: train the micro run in `dir`, saving after every step,
/// until killed; prints `saving N` and `saved N` around each save.
fn train_until_killed(dir: &Path) {
    let config = kill_test_config();
    let (_run, _) = RunDir::open(dir, RunMode::Resume).unwrap();
    let mut trainer = Trainer::new(config, &Device::flex()).unwrap();
    if dir.join("checkpoints/latest").exists() {
        trainer.resume(dir).unwrap();
    }
    while trainer.step() < KILL_TEST_STEPS {
        trainer.train_step();
        println!("saving {}", trainer.step());
        trainer.save_checkpoint(dir).unwrap();
        println!("saved {}", trainer.step());
    }
}

fn kill_test_config() -> TrainConfig {
    let mut config = micro_train(micro_dsv());
    config.steps = KILL_TEST_STEPS;
    config.keep_checkpoints = 2;
    config
}

/// Steps of the run the kill test interrupts.
const KILL_TEST_STEPS: usize = 200;

/// Environment variable that turns this test's process into the child it kills (its value:
/// the run folder), or into the straight run (`REFERENCE`).
const KILL_CHILD: &str = "DIT_KILL_TEST_CHILD";
const REFERENCE: &str = "reference";

/// This test binary running only the kill test, as the child `role` says.
fn kill_test_child(role: &str) -> Command {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "reliability::killed_saves_never_lose_a_checkpoint",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD, role);
    child
}

/// The child side of the reference: the run uninterrupted, printing `loss STEP BITS` lines.
fn print_straight_run() {
    let mut trainer = Trainer::new(kill_test_config(), &Device::flex()).unwrap();
    for _ in 0..KILL_TEST_STEPS {
        let log = trainer.train_step();
        println!("loss {} {}", log.step, log.loss.to_bits());
    }
}

/// The losses the straight run's child printed, each step's exact bits.
fn straight_run_losses(out: std::process::Output) -> Vec<(usize, f32)> {
    assert!(out.status.success(), "the straight run failed");
    let losses: Vec<(usize, f32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l[l.find("loss ")? + "loss ".len()..].split(' ');
            let step = parts.next()?.parse().ok()?;
            let bits = parts.next()?.parse().ok()?;
            Some((step, f32::from_bits(bits)))
        })
        .collect();
    assert_eq!(losses.len(), KILL_TEST_STEPS);
    losses
}

#[test]
fn training_is_bitwise_reproducible_under_load() {
    // The same run (replicas in parallel threads, rayon inside the kernels) in a process alone
    // and in three processes side by side on the same cores: thread timing differs, every
    // step's loss must not (a reduction whose order followed the schedule would show here).
    // Across CPUs it may differ: gemm and the kernels pick AVX-512 or AVX2 code at run time.
    let alone = straight_run_losses(kill_test_child(REFERENCE).output().unwrap());
    let crowded: Vec<_> = (0..3)
        .map(|_| {
            kill_test_child(REFERENCE)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (n, child) in crowded.into_iter().enumerate() {
        let losses = straight_run_losses(child.wait_with_output().unwrap());
        let differ = alone
            .iter()
            .zip(&losses)
            .find(|(a, b)| a.1.to_bits() != b.1.to_bits());
        assert!(
            differ.is_none(),
            "run {n} under load: first differing step {differ:?}"
        );
    }
}

#[test]
fn killed_saves_never_lose_a_checkpoint() {
    match std::env::var(KILL_CHILD).as_deref() {
        Ok(REFERENCE) => return print_straight_run(),
        Ok(dir) => return train_until_killed(Path::new(dir)),
        Err(_) => {}
    }
    let dir = TempDir::new("killed");
    // The straight run every resumed history must match, in a process of its own as the
    // killed runs are: tests running beside this one share the device's generator.
    let reference = straight_run_losses(kill_test_child(REFERENCE).output().unwrap());
    let device = Device::flex();
    let mut rng = SplitMix(2024);
    let (mut kills, mut mid_save, mut saved) = (0, 0, 0usize);
    let started = Instant::now();
    while kills < 100 && saved < KILL_TEST_STEPS && started.elapsed() < Duration::from_secs(300) {
        let mut child = kill_test_child(dir.0.to_str().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            })
        };
        // Wait for the child to start saving, then kill it at a random moment.
        let wait_start = Instant::now();
        while !lines.lock().unwrap().iter().any(|l| l.contains("saving ")) {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).ok();
                panic!("kill {kills}: the child ended by itself ({status}) before saving:\n{err}");
            }
            assert!(
                wait_start.elapsed() < Duration::from_secs(120),
                "kill {kills}: the child did not start saving"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_micros(rng.below(60_000) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        kills += 1;
        let lines = lines.lock().unwrap().clone();
        let last_saved = lines
            .iter()
            .filter_map(|l| l.strip_prefix("saved ")?.parse::<usize>().ok())
            .max();
        // The harness's "test … ... " shares the first line.
        let in_save = lines
            .last()
            .and_then(|l| Some(&l[l.rfind("saving ")? + "saving ".len()..]));
        mid_save += usize::from(in_save.is_some());

        // The newest checkpoint is intact, at the last step reported saved (or the one being
        // saved, when the kill came after the rename), with the straight run's history.
        let mut resumed = Trainer::new(kill_test_config(), &device).unwrap();
        match resumed.resume(&dir.0) {
            Ok(()) => {}
            Err(CheckpointError::Io(..)) if saved == 0 && last_saved.is_none() => continue,
            Err(e) => panic!("kill {kills}: the run cannot resume: {e}"),
        }
        let step = resumed.step();
        let expected = last_saved.unwrap_or(saved);
        assert!(
            step == expected || in_save.is_some_and(|s| s.parse() == Ok(step)),
            "kill {kills}: resumed at step {step}, the child last saved {expected} (its last \
             lines: {:?})",
            &lines[lines.len().saturating_sub(3)..]
        );
        assert_eq!(losses(&resumed), reference[..step], "kill {kills}");
        saved = step;
    }
    assert!(kills >= 50, "only {kills} kills in the time allowed");
    assert!(
        mid_save >= 20,
        "only {mid_save} of {kills} kills landed in a save"
    );
    println!("{kills} kills, {mid_save} during a save, resumed intact every time (step {saved})");
}

#[test]
fn many_labels_sample_in_chunks_with_the_noise_of_one_batch() {
    use burn_dit::data::COND_TOKENS;
    use burn_dit::media::Frames;
    use burn_dit::sample::sample_euler;
    use burn_dit::train::{SAMPLE_CHUNK, generate, generate_with_progress, label_ids};
    let device = Device::flex();
    let config = micro_train(AttentionKind::Dense);
    let model = jittered(AttentionKind::Dense, &device).valid();
    let labels: Vec<(usize, usize)> = (0..SAMPLE_CHUNK + 3).map(|i| (i % 3, i % 4)).collect();
    let mut calls = Vec::new();
    let all = generate_with_progress(&model, config.clip, &labels, config.sampler, 5, |d, n| {
        calls.push((d, n))
    });
    let n = labels.len();
    assert_eq!(calls, [(SAMPLE_CHUNK, n), (n, n)]);
    assert_eq!(all.len(), n);
    // Clip SAMPLE_CHUNK (the second chunk's first) starts from the noise a batch of all
    // labels gives it: sample it alone from that noise.
    let c = config.clip;
    let noise = SplitMix(5)
        .normal_tensor([n, 3, c.frames, c.height, c.width], &device)
        .narrow(0, SAMPLE_CHUNK, 1);
    let cond = model.embed_labels(label_ids(&labels[SAMPLE_CHUNK..SAMPLE_CHUNK + 1], &device));
    let uncond = model.embed_labels(Tensor::zeros([1, COND_TOKENS], &device));
    let alone = sample_euler(&model, noise, cond, uncond, config.sampler).unwrap();
    let pixels: Vec<f32> = alone.into_data().convert::<f32>().try_to_vec().unwrap();
    let alone = Frames::from_chw(&pixels, c.frames, c.height, c.width);
    let worst = |a: &Frames, b: &Frames| {
        a.frames
            .iter()
            .flatten()
            .zip(b.frames.iter().flatten())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap()
    };
    assert!(worst(&alone, &all[SAMPLE_CHUNK]) <= 1);
    assert!(
        worst(&all[0], &all[SAMPLE_CHUNK]) > 1,
        "distinct noise per clip"
    );
    // `generate` is the same without progress.
    let plain = generate(&model, c, &labels[..2], config.sampler, 5);
    assert!(worst(&plain[0], &all[0]) <= 1);
}
