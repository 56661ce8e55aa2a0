//! Faults a user meets on a shared machine: ranks that disagree on the run, a `latest`
//! pointer that leads out of the run folder, retention next to a damaged checkpoint, refused
//! folders, outputs killed mid-write, and sampler settings without a meaning.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use burn_ctx_parallel::transport::run_in_process;
use burn_dit::AttentionKind;
use burn_dit::DitError;
use burn_dit::data::SplitMix;
use burn_dit::media::{Frames, write_gif};
use burn_dit::train::optim::OptimizerKind;
use burn_dit::train::{
    CheckpointError, IfDamaged, RunDir, RunDirError, RunMode, Trainer, load_for_sampling,
};

use crate::common::*;

#[test]
fn ranks_that_train_different_runs_fail_by_name_on_every_rank() {
    let device = Device::flex();
    let base = micro_train(AttentionKind::Dense);
    // Settings that keep every tensor's shape, so no collective would notice them.
    type Change = fn(&mut burn_dit::train::TrainConfig);
    let cases: [(&str, Change); 3] = [
        ("lr", |c| c.lr = 2e-3),
        ("steps", |c| c.steps = 6),
        ("optimizer", |c| c.optimizer = OptimizerKind::AdamW),
    ];
    for (field, change) in cases {
        let mut lead = base.clone();
        lead.lr = 1e-3;
        lead.optimizer = OptimizerKind::Muon;
        let mut other = lead.clone();
        change(&mut other);
        for sequence_parallel in [false, true] {
            let results =
                run_in_process::<_, DitError>(&[device.clone(), device.clone()], |comm| {
                    let config = if comm.rank() == 0 { &lead } else { &other };
                    let trainer = Trainer::new(config.clone(), comm.device()).unwrap();
                    match sequence_parallel {
                        false => trainer.with_communicator(comm).map(|_| ()),
                        true => trainer.with_sequence_parallel(comm).map(|_| ()),
                    }
                });
            let lead_value = serde_json::to_value(&lead).unwrap()[field].to_string();
            let other_value = serde_json::to_value(&other).unwrap()[field].to_string();
            for (rank, result) in results.iter().enumerate() {
                let err = result.as_ref().unwrap_err().to_string();
                assert!(
                    err.contains(&format!("`config.{field}` is {lead_value} on rank 0"))
                        && err.contains(&format!("got {other_value} on rank 1")),
                    "rank {rank}, {field}: {err}"
                );
            }
        }
    }
    // The same run on every rank trains.
    let results = run_in_process::<_, DitError>(&[device.clone(), device.clone()], |comm| {
        Trainer::new(base.clone(), comm.device())
            .unwrap()
            .with_communicator(comm)
            .map(|_| ())
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

#[test]
fn a_latest_pointer_out_of_the_run_folder_is_refused() {
    let device = Device::flex();
    let ours = TempDir::new("latest-ours");
    let theirs = TempDir::new("latest-theirs");
    let config = micro_train(AttentionKind::Dense);
    for (dir, steps) in [(&ours, 1), (&theirs, 2)] {
        let mut trainer = Trainer::new(config.clone(), &device).unwrap();
        for _ in 0..steps {
            trainer.train_step();
        }
        trainer.save_checkpoint(&dir.0).unwrap();
    }
    let other = theirs.0.join("checkpoints/step_000002");
    let relative = format!(
        "../../{}/checkpoints/step_000002",
        theirs.0.file_name().unwrap().to_str().unwrap()
    );
    for pointer in [other.display().to_string(), relative] {
        std::fs::write(ours.0.join("checkpoints/latest"), &pointer).unwrap();
        match load_for_sampling(&ours.0, &device, IfDamaged::Fail) {
            Err(e @ CheckpointError::Damaged { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("latest") && text.contains(&pointer),
                    "{pointer}: {text}"
                );
                assert!(text.contains("step_000001"), "the intact one: {text}");
            }
            other => panic!(
                "{pointer}: expected the pointer refused, got {:?}",
                other.err()
            ),
        }
        // Asked to, the run resumes from its own newest intact checkpoint, not the other's.
        let mut trainer = Trainer::new(config.clone(), &device).unwrap();
        let from = trainer
            .resume_with(&ours.0, IfDamaged::UseNewestIntact)
            .unwrap();
        assert_eq!(from, ours.0.join("checkpoints/step_000001"));
        assert_eq!(trainer.step(), 1);
    }
}

#[test]
fn retention_keeps_the_newest_intact_checkpoints() {
    let dir = TempDir::new("retention");
    let device = Device::flex();
    let mut config = micro_train(AttentionKind::Dense);
    config.keep_checkpoints = 2;
    let mut trainer = Trainer::new(config, &device).unwrap();
    for _ in 0..2 {
        trainer.train_step();
        trainer.save_checkpoint(&dir.0).unwrap();
    }
    // Step 2 is damaged after it was written.
    let damaged = dir.0.join("checkpoints/step_000002/state.json");
    std::fs::write(&damaged, b"{}").unwrap();
    trainer.train_step();
    trainer.save_checkpoint(&dir.0).unwrap();
    // Two intact ones are kept (3 and 1); the damaged one stays beside them, uncounted.
    let left = names_in(&dir.0.join("checkpoints"));
    assert_eq!(
        left,
        ["latest", "step_000001", "step_000002", "step_000003"]
    );
    trainer.train_step();
    trainer.save_checkpoint(&dir.0).unwrap();
    let left = names_in(&dir.0.join("checkpoints"));
    assert_eq!(left, ["latest", "step_000003", "step_000004"]);
}

#[test]
fn a_refused_folder_is_left_as_found_and_a_killed_start_is_fresh() {
    let dir = TempDir::new("refused");
    // A user's folder: refused, and no `.lock` left in it.
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("notes.txt"), b"mine").unwrap();
    match RunDir::open(&dir.0, RunMode::Fresh) {
        Err(RunDirError::NotEmpty(_, names)) => assert_eq!(names, ["notes.txt"]),
        other => panic!("expected the folder refused, got {other:?}"),
    }
    let names = names_in(&dir.0);
    assert_eq!(names, ["notes.txt"]);
    // A user's `*.tmp` file is theirs, not a leftover of ours: refused too.
    let notes = dir.0.join("notes.tmp");
    std::fs::write(&notes, b"mine").unwrap();
    std::fs::remove_file(dir.0.join("notes.txt")).unwrap();
    match RunDir::open(&dir.0, RunMode::Fresh) {
        Err(RunDirError::NotEmpty(_, names)) => assert_eq!(names, ["notes.tmp"]),
        other => panic!("expected the folder refused, got {other:?}"),
    }
    std::fs::remove_file(&notes).unwrap();
    std::fs::write(dir.0.join("notes.txt"), b"mine").unwrap();
    // A folder the refused call created is removed again.
    let blocked = dir.0.join("notes.txt/run");
    assert!(RunDir::open(&blocked, RunMode::Fresh).is_err());
    std::fs::remove_file(dir.0.join("notes.txt")).unwrap();

    // What a run killed before its first checkpoint leaves (empty `checkpoints/`, `samples/`
    // holding a killed GIF write) is a fresh folder; the leftover is removed and listed.
    let run = dir.0.join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    std::fs::create_dir_all(run.join("samples")).unwrap();
    std::fs::write(run.join("samples/.tmp-a1b2c3"), b"GIF89a").unwrap();
    std::fs::write(run.join(".lock"), b"").unwrap();
    let (_run, removed) = RunDir::open(&run, RunMode::Fresh).unwrap();
    assert_eq!(removed, [run.join("samples/.tmp-a1b2c3")]);
}

/// Environment variable that turns this test's process into the child it kills (its value:
/// the GIF to write over and over).
const GIF_CHILD: &str = "DIT_KILLED_GIF_CHILD";

/// A GIF that takes tens of milliseconds to encode.
fn busy_video(seed: u64) -> Frames {
    let mut rng = SplitMix(seed);
    let (height, width) = (96, 96);
    Frames {
        height,
        width,
        frames: (0..24)
            .map(|_| {
                (0..height * width * 3)
                    .map(|_| rng.below(256) as u8)
                    .collect()
            })
            .collect(),
    }
}

#[test]
fn outputs_killed_mid_write_leave_the_old_file_whole() {
    if let Ok(path) = std::env::var(GIF_CHILD) {
        let video = busy_video(2);
        println!("writing");
        loop {
            write_gif(Path::new(&path), &video, 6).unwrap();
        }
    }
    let dir = TempDir::new("killed-gif");
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("samples.gif");
    // The good file that is there before, and the one the child writes (whole).
    let reference = dir.0.join("reference.gif");
    write_gif(&reference, &busy_video(2), 6).unwrap();
    let whole = std::fs::read(&reference).unwrap();
    let mut rng = SplitMix(7);
    let started = Instant::now();
    let mut kills = 0;
    while kills < 20 && started.elapsed() < Duration::from_secs(120) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "faults::outputs_killed_mid_write_leave_the_old_file_whole",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(GIF_CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.contains("writing"))),
            "the child did not start"
        );
        std::thread::sleep(Duration::from_micros(rng.below(80_000) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Whole or absent (the first kill may come before the first rename), never cut.
        match std::fs::read(&path) {
            Ok(bytes) => assert!(
                bytes == whole,
                "kill {kills}: {} bytes, not the whole {}",
                bytes.len(),
                whole.len()
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "kill {kills}"),
        }
    }
    assert!(kills >= 10, "only {kills} kills in the time allowed");
    // The kills leave temporary files, which a run folder's next start removes.
    let leftovers = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count();
    println!("{kills} kills, {leftovers} temporary files left, the GIF whole every time");
}

#[test]
fn a_negative_guidance_is_refused() {
    let mut sampler = plain_sampler(2);
    sampler.guidance = -5.0;
    let err = sampler.check("test").unwrap_err().to_string();
    assert!(
        err.contains("config.guidance") && err.contains("-5"),
        "{err}"
    );
    sampler.guidance = 0.0;
    sampler.check("test").unwrap();
}

#[test]
fn damaged_pointers_and_manifests_are_named_and_the_intact_checkpoint_offered() {
    let device = Device::flex();
    let dir = TempDir::new("pointers");
    let elsewhere = TempDir::new("pointers-elsewhere");
    let config = micro_train(AttentionKind::Dense);
    let mut trainer = Trainer::new(config.clone(), &device).unwrap();
    for _ in 0..2 {
        trainer.train_step();
        trainer.save_checkpoint(&dir.0).unwrap();
    }
    let mut other = Trainer::new(config.clone(), &device).unwrap();
    for _ in 0..3 {
        other.train_step();
    }
    other.save_checkpoint(&elsewhere.0).unwrap();
    let ckpts = dir.0.join("checkpoints");
    let latest = ckpts.join("latest");
    let second = ckpts.join("step_000002");
    let manifest = second.join("manifest.json");
    let good_manifest = std::fs::read(&manifest).unwrap();
    // (what is done, what the error names)
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: Vec<Damage> = vec![
        (
            "empty latest",
            Box::new(|| std::fs::write(&latest, b"").unwrap()),
            "latest",
        ),
        (
            "latest naming a missing step",
            Box::new(|| std::fs::write(&latest, b"step_000009").unwrap()),
            "step_000009",
        ),
        (
            "a checkpoint folder linked out of the run",
            Box::new(|| {
                std::fs::write(&latest, b"step_000007").unwrap();
                std::os::unix::fs::symlink(
                    elsewhere.0.join("checkpoints/step_000003"),
                    ckpts.join("step_000007"),
                )
                .unwrap();
            }),
            "symbolic link",
        ),
        (
            "a missing manifest",
            Box::new(|| std::fs::remove_file(&manifest).unwrap()),
            "manifest.json",
        ),
        (
            "an invalid manifest",
            Box::new(|| std::fs::write(&manifest, b"{\"format\": 7,").unwrap()),
            "manifest.json",
        ),
        (
            "a manifest that lies about a size",
            Box::new(|| {
                let text = String::from_utf8(good_manifest.clone()).unwrap();
                let lie = text.replacen("\"size\": ", "\"size\": 1", 1);
                std::fs::write(&manifest, lie).unwrap()
            }),
            "where the manifest says",
        ),
    ];
    for (what, damage, named) in cases {
        std::fs::write(&latest, b"step_000002").unwrap();
        std::fs::write(&manifest, &good_manifest).unwrap();
        let _ = std::fs::remove_file(ckpts.join("step_000007"));
        damage();
        // Named, with the newest intact checkpoint offered …
        match load_for_sampling(&dir.0, &device, IfDamaged::Fail) {
            Err(e @ CheckpointError::Damaged { .. }) => {
                let text = e.to_string();
                assert!(text.contains(named), "{what}: {text}");
                assert!(text.contains("the newest intact one is"), "{what}: {text}");
            }
            other => panic!(
                "{what}: expected a damaged checkpoint, got {:?}",
                other.err()
            ),
        }
        // … which is this run's own and loads when asked.
        let mut resumed = Trainer::new(config.clone(), &device).unwrap();
        let from = resumed
            .resume_with(&dir.0, IfDamaged::UseNewestIntact)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(from.starts_with(&ckpts), "{what}: {}", from.display());
        assert_ne!(from, ckpts.join("step_000007"), "{what}");
    }
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_on_one_and_on_three() {
    let device = Device::flex();
    let dir = TempDir::new("ranks-resume");
    let mut config = micro_train(AttentionKind::Dense);
    config.replicas = 1;
    // Two data-parallel ranks train two steps; rank 0 saves.
    let saved = run_in_process::<_, DitError>(&[device.clone(), device.clone()], |comm| {
        let lead = comm.rank() == 0;
        let mut trainer = Trainer::new(config.clone(), comm.device())
            .unwrap()
            .with_communicator(comm)?;
        for _ in 0..2 {
            trainer.try_train_step().unwrap();
        }
        if lead {
            trainer.save_checkpoint(&dir.0).unwrap();
        }
        Ok(params(&trainer))
    });
    let weights = saved[0].as_ref().unwrap().clone();
    for world in [1, 3] {
        let resumed = run_in_process::<_, DitError>(&vec![device.clone(); world], |comm| {
            let mut trainer = Trainer::new(config.clone(), comm.device()).unwrap();
            trainer.resume(&dir.0).unwrap();
            let mut trainer = trainer.with_communicator(comm)?;
            let at = (trainer.step(), params(&trainer));
            let log = trainer.try_train_step().unwrap();
            Ok((at, log.step, log.loss))
        });
        for (rank, result) in resumed.into_iter().enumerate() {
            let ((step, params), next, loss) = result.unwrap();
            assert_eq!(step, 2, "{world} ranks, rank {rank}");
            assert_eq!(
                params, weights,
                "{world} ranks, rank {rank}: the saved weights"
            );
            assert_eq!(next, 3, "{world} ranks, rank {rank}");
            assert!(loss.is_finite(), "{world} ranks, rank {rank}: loss {loss}");
        }
    }
}
