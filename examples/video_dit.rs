//! Train, sample and evaluate the video DiT with DSV sparse attention.
//!
//! ```text
//! cargo run --release --example video_dit -- train [--out out/tiny] [--attention dsv|dense]
//!     [--steps 2700] [--replicas 2] [--optimizer muon|adamw] [--prediction velocity|clean] [--head-conv] [--self-condition]
//!     [--parallel-block] [--feature-aggregation]
//!     [--lr 2e-3] [--device flex|ndarray|wgpu|vulkan|cuda] [--resume | --overwrite]
//!     [--keep-checkpoints 3] [--checkpoint-every N] [--on-divergence stop|skip] [--use-intact]
//! mpirun -np 2 target/release/examples/video_dit train --transport mpi [--replicas 1] [--sequence-parallel] …
//! cargo run --release --example video_dit -- sample --out out/tiny --labels circle:red,square:blue
//! cargo run --release --example video_dit -- eval --out out/tiny
//! ```
//! `train` writes under `--out`: periodic `samples/step_N.gif`, `samples.gif` (12 of the 48
//! clips the report measures), `contact_sheet.png`, `loss.png`, `report.json`, `report.md`
//! and `checkpoints/`. With `--transport mpi` (a build with `--features mpi`) every process of
//! the MPI job is one data-parallel rank: the batch is shared out over `ranks × replicas`
//! shares and the gradients summed over the ranks, and rank 0 writes every file; with
//! `--sequence-parallel` every clip is split along time over the processes instead.

use std::path::PathBuf;

use burn::tensor::Device;
use burn_sparse_video::dit::data::{DataSource, FASHION_DIR, parse_label};
use burn_sparse_video::dit::sample::SamplerConfig;
use burn_sparse_video::dit::sample::faster_cache::FasterCacheConfig;
use burn_sparse_video::dit::sample::free_init::FreeInitConfig;
use burn_sparse_video::dit::sample::online_sparse::OnlineSparseConfig;
use burn_sparse_video::dit::train::optim::OptimizerKind;
use burn_sparse_video::dit::train::report::{attention_name, confusion_table};
use burn_sparse_video::dit::train::{
    CheckpointError, DivergencePolicy, Evaluation, IfDamaged, REPORT_CLIPS, RunDir, RunDirError,
    RunEnd, RunMode, RunProgress, TrainConfig, Trainer, sample_with_progress, saved_config,
    write_video_set,
};
use burn_sparse_video::dit::{AttentionKind, Prediction, VideoDitConfig};
use clap::{Parser, Subcommand, ValueEnum};

use fail::fail;
#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/fail.rs"]
mod fail;
#[path = "common/ranks.rs"]
mod ranks;
#[path = "common/stop.rs"]
mod stop;
use ranks::{Transport, on_ranks};
#[path = "common/device.rs"]
mod device_names;
use device_names::try_device_named;

#[derive(Parser)]
#[command(about = "Video DiT with DSV dynamic sparse attention on Burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceChoice {
    Flex,
    Ndarray,
    Wgpu,
    Vulkan,
    Cuda,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum DataChoice {
    /// Bouncing shapes (generated).
    Shapes,
    /// Moving Fashion-MNIST (needs the dataset files, see `--fashion-dir`).
    Fashion,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum AttentionChoice {
    Dsv,
    Dense,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerChoice {
    /// AdamW on every parameter.
    Adamw,
    /// Muon on the blocks' weight matrices, AdamW on the rest.
    Muon,
}

#[derive(Clone, Copy, ValueEnum)]
enum PredictionChoice {
    /// The head predicts the velocity ε − x0.
    Velocity,
    /// The head predicts the clean video x0.
    Clean,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Output folder (samples, report, checkpoints).
    #[arg(long, default_value = "out/tiny")]
    out: PathBuf,
    /// Device to run on.
    #[arg(long, value_enum, default_value = "flex")]
    device: DeviceChoice,
    /// Self-attention of the DiT (train: default dsv; sample/eval: the checkpoint's, and an
    /// error if given and different).
    #[arg(long, value_enum)]
    attention: Option<AttentionChoice>,
    /// Training clips (train: default shapes; sample/eval: the checkpoint's, and an error if
    /// given and different).
    #[arg(long, value_enum)]
    data: Option<DataChoice>,
    /// Folder of the Fashion-MNIST `.gz` files (`apt install dataset-fashion-mnist`).
    #[arg(long, default_value = FASHION_DIR)]
    fashion_dir: PathBuf,
    /// When the newest checkpoint fails its manifest, load the newest intact one instead of
    /// stopping.
    #[arg(long)]
    use_intact: bool,
}

impl Common {
    fn data_source(&self) -> DataSource {
        match self.data.unwrap_or(DataChoice::Shapes) {
            DataChoice::Shapes => DataSource::BouncingShapes,
            DataChoice::Fashion => DataSource::MovingFashion {
                dir: self.fashion_dir.clone(),
            },
        }
    }

    fn attention_kind(&self) -> AttentionKind {
        match self.attention.unwrap_or(AttentionChoice::Dsv) {
            AttentionChoice::Dense => AttentionKind::Dense,
            AttentionChoice::Dsv => AttentionKind::tiny_dsv(),
        }
    }

    fn if_damaged(&self) -> IfDamaged {
        if self.use_intact {
            IfDamaged::UseNewestIntact
        } else {
            IfDamaged::Fail
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DivergenceChoice {
    /// Stop the run with a named error.
    Stop,
    /// Skip the step and halve the learning rate (stop after 10 skips in a row).
    Skip,
}

#[derive(Subcommand)]
enum Command {
    /// Train the tiny DiT on bouncing shapes, then sample, evaluate and report.
    Train {
        #[command(flatten)]
        common: Common,
        /// Optimisation steps (default: the tiny preset's).
        #[arg(long)]
        steps: Option<usize>,
        /// Clips per step (default: the tiny preset's).
        #[arg(long)]
        batch: Option<usize>,
        /// Model replicas training on shares of each batch in parallel threads (default: the
        /// tiny preset's, 2).
        #[arg(long)]
        replicas: Option<usize>,
        /// Continue from `OUT/checkpoints/latest`.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start over in a folder that holds an earlier run (its checkpoints/ and samples/
        /// are deleted).
        #[arg(long)]
        overwrite: bool,
        /// Checkpoints kept on disk, the newest (0 = all; default: the tiny preset's, 3).
        #[arg(long)]
        keep_checkpoints: Option<usize>,
        /// Steps between checkpoints (0 = only at the end; default: half the run).
        #[arg(long)]
        checkpoint_every: Option<usize>,
        /// What a step with a NaN or infinite loss or gradient does.
        #[arg(long, value_enum, default_value = "stop")]
        on_divergence: DivergenceChoice,
        /// Per-block activation checkpointing: the same gradients in less memory, for one
        /// more forward of the blocks per step (`TrainConfig::checkpointing`).
        #[arg(long)]
        checkpointing: bool,
        /// `threads`: this process alone; `mpi`: one data-parallel rank per process of the MPI
        /// job (`mpirun -np N`).
        #[arg(long, value_enum, default_value_t = Transport::Threads)]
        transport: Transport,
        /// Split every clip along time over the ranks (sequence parallelism) instead of
        /// sharing out the batch; needs `--replicas 1`.
        #[arg(long)]
        sequence_parallel: bool,
        /// Peak learning rate (default: the tiny preset's).
        #[arg(long)]
        lr: Option<f64>,
        /// Optimiser of the DiT (default: the tiny preset's, Muon).
        #[arg(long, value_enum)]
        optimizer: Option<OptimizerChoice>,
        /// What the DiT's head predicts (default: the tiny preset's).
        #[arg(long, value_enum)]
        prediction: Option<PredictionChoice>,
        /// Add the 3×3 convolution over each output frame (`VideoDitConfig::head_conv`).
        #[arg(long)]
        head_conv: bool,
        /// Self-condition on the model's previous clean-video estimate (`VideoDitConfig::self_condition`).
        #[arg(long)]
        self_condition: bool,
        /// Vchitect-2.0's parallel block: attention, cross-attention and MLP read the same
        /// input and share one residual (`VideoDitConfig::parallel_block`).
        #[arg(long)]
        parallel_block: bool,
        /// RepVideo's gated aggregate of the preceding blocks' outputs on each attention input
        /// (`VideoDitConfig::feature_aggregation`).
        #[arg(long)]
        feature_aggregation: bool,
    },
    /// Sample clips from the latest checkpoint.
    Sample {
        #[command(flatten)]
        common: Common,
        /// `object:colour` pairs, comma separated, at most 1024 (shapes: square, circle,
        /// triangle; Fashion-MNIST: t-shirt, trouser, pullover, dress, coat, sandal, shirt,
        /// sneaker, bag, ankle-boot).
        #[arg(
            long,
            default_value = "square:red,circle:green,triangle:blue,circle:yellow"
        )]
        labels: String,
        /// Noise seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[command(flatten)]
        accelerators: Accelerators,
    },
    /// Measure samples of the latest checkpoint against held-out real clips.
    Eval {
        #[command(flatten)]
        common: Common,
        /// Clips to generate and compare (1 to 1024).
        #[arg(long, default_value_t = REPORT_CLIPS)]
        clips: usize,
        /// Classifier-free guidance scale (default: the training run's sampler).
        #[arg(long)]
        guidance: Option<f64>,
        /// Euler steps (default: the training run's sampler).
        #[arg(long)]
        sampling_steps: Option<usize>,
        /// Timestep shift (default: the training run's sampler).
        #[arg(long)]
        shift: Option<f64>,
        /// Guide only steps starting at σ ≤ this (default: the training run's sampler).
        #[arg(long)]
        guidance_max_sigma: Option<f64>,
        /// Fresh noise per sampling step, 0 (Euler) to 1 (ancestral) (default: the training run's sampler).
        #[arg(long)]
        stochasticity: Option<f64>,
        #[command(flatten)]
        accelerators: Accelerators,
    },
}

fn device(choice: DeviceChoice) -> Device {
    let name = choice.to_possible_value().expect("every choice has a name");
    try_device_named(name.get_name()).unwrap_or_else(|e| fail(format!("--device: {e}")))
}

/// The tiny preset (the library's), with the command line's attention, data, steps and batch.
fn train_config(common: &Common, steps: Option<usize>, batch: Option<usize>) -> TrainConfig {
    let model = VideoDitConfig::tiny().with_attention(common.attention_kind());
    let mut config = TrainConfig::tiny(model);
    config.data = common.data_source();
    with_length(config, steps, batch)
}

/// `config` with the command line's steps and batch, where given.
fn with_length(mut config: TrainConfig, steps: Option<usize>, batch: Option<usize>) -> TrainConfig {
    if let Some(steps) = steps {
        config = config.with_steps(steps);
    }
    if let Some(batch) = batch {
        config.batch_size = batch;
    }
    config
}

/// The configuration of the run in `--out`, with what the command line sets explicitly (a
/// model setting that contradicts the checkpoint is then refused by name when resuming).
fn resumed_config(common: &Common, steps: Option<usize>, batch: Option<usize>) -> TrainConfig {
    let mut config = saved_config(&common.out, common.if_damaged())
        .unwrap_or_else(|e| fail(checkpoint_hint(&e)));
    if common.attention.is_some() {
        config.model.attention = common.attention_kind();
    }
    if common.data.is_some() {
        config.data = common.data_source();
    }
    with_length(config, steps, batch)
}

/// Most clips `sample` and `eval` make in one run (they are sampled in chunks; the GIF
/// holds them all).
const MAX_CLIPS: usize = 1024;

fn parse_labels(text: &str, classes: &[&str]) -> Vec<(usize, usize)> {
    let labels: Vec<(usize, usize)> = text
        .split(',')
        .map(|pair| parse_label(pair, classes).unwrap_or_else(|e| fail(format!("--labels: {e}"))))
        .collect();
    if labels.len() > MAX_CLIPS {
        fail(format!(
            "--labels: at most {MAX_CLIPS} labels per run, got {}",
            labels.len()
        ));
    }
    labels
}

/// The training-free sampling accelerators, each off unless asked for.
#[derive(clap::Args, Clone, Copy)]
struct Accelerators {
    /// FasterCache: reuse attention outputs and the guidance difference across steps.
    #[arg(long)]
    faster_cache: bool,
    /// FreeInit with this many sampling passes (its defaults otherwise).
    #[arg(long)]
    free_init: Option<usize>,
    /// Online sparse attention skipping this share of the keys, found from the full
    /// attention at a few steps (its defaults otherwise).
    #[arg(long)]
    online_sparse: Option<f64>,
}

impl Accelerators {
    /// `sampler` with the accelerators switched on as asked; the caller checks the result.
    fn apply(&self, sampler: SamplerConfig) -> SamplerConfig {
        SamplerConfig {
            faster_cache: self
                .faster_cache
                .then(FasterCacheConfig::default)
                .or(sampler.faster_cache),
            free_init: self
                .free_init
                .map(|iterations| FreeInitConfig {
                    iterations,
                    ..FreeInitConfig::default()
                })
                .or(sampler.free_init),
            online_sparse: self
                .online_sparse
                .map(OnlineSparseConfig::new)
                .or(sampler.online_sparse),
            ..sampler
        }
    }

    /// The part of an output file name that says which are on.
    fn file_suffix(&self) -> String {
        let mut suffix = String::new();
        if self.faster_cache {
            suffix.push_str("_fastercache");
        }
        if let Some(n) = self.free_init {
            suffix.push_str(&format!("_freeinit{n}"));
        }
        if let Some(sparsity) = self.online_sparse {
            suffix.push_str(&format!("_onlinesparse{sparsity}"));
        }
        suffix
    }
}

/// The run the checkpoint in `--out` was trained as: its model, data, clips and optimiser.
/// `--attention` and `--data`, when given, must agree with it.
fn load_trainer(common: &Common) -> Trainer {
    let out = &common.out;
    let saved =
        saved_config(out, common.if_damaged()).unwrap_or_else(|e| fail(checkpoint_hint(&e)));
    if let Some(choice) = common.attention {
        let asked = if choice == AttentionChoice::Dense {
            "dense"
        } else {
            "dsv"
        };
        let trained = attention_name(&saved.model.attention);
        if asked != trained {
            fail(format!(
                "--attention {asked} contradicts the checkpoint in {}, trained with {trained} \
                 attention (leave --attention out to use the checkpoint's)",
                out.display()
            ));
        }
    }
    if common.data.is_some() && common.data_source() != saved.data {
        fail(format!(
            "--data {:?} contradicts the checkpoint in {}, trained on {:?} (leave --data out to \
             use the checkpoint's)",
            common.data_source(),
            out.display(),
            saved.data
        ));
    }
    let mut trainer = Trainer::new(saved, &device(common.device))
        .unwrap_or_else(|e| fail(format!("--data: {e}")));
    let loaded = trainer
        .resume_with(out, common.if_damaged())
        .unwrap_or_else(|e| fail(checkpoint_hint(&e)));
    println!("loaded {} (step {})", loaded.display(), trainer.step());
    trainer
}

/// A checkpoint error with what the user can do about it.
fn checkpoint_hint(e: &CheckpointError) -> String {
    match e {
        CheckpointError::Damaged {
            newest_intact: Some(_),
            ..
        } => format!("{e} (--use-intact loads it)"),
        CheckpointError::Io(..) => format!("{e} (train first)"),
        _ => e.to_string(),
    }
}

/// Model options of `train` beyond the tiny preset.
struct ModelFlags {
    prediction: Option<PredictionChoice>,
    head_conv: bool,
    self_condition: bool,
    parallel_block: bool,
    feature_aggregation: bool,
}

/// How much `train` trains, and how.
struct Schedule {
    steps: Option<usize>,
    batch: Option<usize>,
    replicas: Option<usize>,
    lr: Option<f64>,
    transport: Transport,
    sequence_parallel: bool,
    keep_checkpoints: Option<usize>,
    checkpoint_every: Option<usize>,
    on_divergence: DivergenceChoice,
    checkpointing: bool,
}

fn train(
    common: Common,
    schedule: Schedule,
    optimizer: Option<OptimizerChoice>,
    flags: ModelFlags,
    mode: RunMode,
) {
    let Schedule {
        steps,
        batch,
        replicas,
        lr,
        transport,
        sequence_parallel,
        keep_checkpoints,
        checkpoint_every,
        on_divergence,
        checkpointing,
    } = schedule;
    if steps == Some(0) || batch == Some(0) {
        fail("--steps and --batch must be ≥ 1");
    }
    if batch.is_some_and(|b| b > 1024) {
        fail(format!(
            "--batch must be at most 1024, got {}",
            batch.unwrap_or(0)
        ));
    }
    let out = &common.out;
    let mut config = match mode {
        RunMode::Resume => resumed_config(&common, steps, batch),
        _ => train_config(&common, steps, batch),
    };
    let batch = config.batch_size;
    if replicas.is_some_and(|r| r == 0 || r > batch) {
        fail(format!(
            "--replicas must be in 1..=--batch ({batch}), got {}",
            replicas.unwrap_or(0)
        ));
    }
    if let Some(choice) = optimizer {
        config.optimizer = match choice {
            OptimizerChoice::Adamw => OptimizerKind::AdamW,
            OptimizerChoice::Muon => OptimizerKind::Muon,
        };
    }
    if let Some(choice) = flags.prediction {
        config.model.prediction = match choice {
            PredictionChoice::Velocity => Prediction::Velocity,
            PredictionChoice::Clean => Prediction::Clean,
        };
    }
    if let Some(replicas) = replicas {
        config.replicas = replicas;
    }
    config.model.head_conv |= flags.head_conv;
    config.model.self_condition |= flags.self_condition;
    config.model.parallel_block |= flags.parallel_block;
    config.model.feature_aggregation |= flags.feature_aggregation;
    if let Some(lr) = lr {
        if !(lr > 0.0 && lr.is_finite()) {
            fail(format!("--lr must be a positive number, got {lr}"));
        }
        config.lr = lr;
    }
    if let Some(keep) = keep_checkpoints {
        config.keep_checkpoints = keep;
    }
    if let Some(every) = checkpoint_every {
        config.checkpoint_every = every;
    }
    config.checkpointing |= checkpointing;
    config.on_divergence = match on_divergence {
        DivergenceChoice::Stop => DivergencePolicy::Stop,
        DivergenceChoice::Skip => DivergencePolicy::SkipStep {
            lr_factor: 0.5,
            max_consecutive: 10,
        },
    };
    let device = device(common.device);
    // One process: it can stop between steps with a checkpoint. The ranks of an MPI job would
    // have to agree on the step first; mpirun's signal ends them as before.
    if transport == Transport::Threads {
        stop::catch_polite_stops();
    }
    let trained = on_ranks(transport, 1, &device, |comm| {
        let lead = comm.rank() == 0;
        // The lead rank owns the folder for the whole run (the lock goes with `_run_dir`).
        let _run_dir = lead.then(|| {
            let (run_dir, removed) = RunDir::open(out, mode).unwrap_or_else(|e| {
                fail(match e {
                    RunDirError::NotEmpty(..) => format!("{e} (--resume or --overwrite)"),
                    e => e.to_string(),
                })
            });
            for path in removed {
                println!("removed {} (left by an interrupted save)", path.display());
            }
            std::fs::create_dir_all(out.join("samples")).unwrap_or_else(|e| {
                fail(format!("creating {}: {e}", out.join("samples").display()))
            });
            run_dir
        });
        let mut trainer =
            Trainer::new(config.clone(), &device).unwrap_or_else(|e| fail(format!("--data: {e}")));
        if mode == RunMode::Resume {
            let from = trainer
                .resume_with(out, common.if_damaged())
                .unwrap_or_else(|e| fail(checkpoint_hint(&e)));
            if lead {
                println!("resumed at step {} from {}", trainer.step(), from.display());
            }
            if trainer.step() >= config.steps {
                if lead {
                    println!(
                        "nothing to train: the checkpoint is at step {}, --steps is {}; \
                         nothing was changed",
                        trainer.step(),
                        config.steps
                    );
                }
                return Ok(());
            }
        }
        if comm.world() > 1 && lead {
            match sequence_parallel {
                true => println!(
                    "sequence parallel over {} MPI processes, each a run of every clip's frames",
                    comm.world()
                ),
                false => println!(
                    "data parallel over {} MPI processes, {} shares of the batch each",
                    comm.world(),
                    trainer.config().replicas
                ),
            }
        }
        let mut trainer = match sequence_parallel {
            true => trainer.with_sequence_parallel(comm)?,
            false => trainer.with_communicator(comm)?,
        };
        let mut progress = Progress;
        match trainer.run(out, lead, &mut progress) {
            Ok(RunEnd::Finished {
                checkpoint: Some(checkpoint),
            }) => println!("checkpoint: {}", checkpoint.display()),
            Ok(RunEnd::Finished { checkpoint: None }) => {}
            Ok(RunEnd::Stopped { checkpoint }) => {
                let (signal, status) = stop::requested().expect("stopped on request");
                println!(
                    "stopped by {signal} at step {}: saved {} (train --resume continues the run)",
                    trainer.step(),
                    checkpoint.display()
                );
                std::process::exit(status);
            }
            Err(e) => fail(e),
        }
        Ok(())
    });
    trained.unwrap_or_else(|e| fail(e));
}

/// The run's lines on the terminal; a caught SIGTERM or SIGINT stops it after the step.
struct Progress;

impl RunProgress for Progress {
    fn line(&mut self, text: &str) {
        println!("{text}");
    }

    fn stop_requested(&mut self) -> bool {
        stop::requested().is_some()
    }
}

impl Command {
    fn common(&self) -> &Common {
        match self {
            Self::Train { common, .. }
            | Self::Sample { common, .. }
            | Self::Eval { common, .. } => common,
        }
    }
}

fn main() {
    allocator::keep_freed_memory();
    let command = Cli::parse().command;
    let device = command.common().device.to_possible_value();
    device_names::make_default(device.expect("every choice has a name").get_name());
    match command {
        Command::Train {
            common,
            steps,
            batch,
            replicas,
            lr,
            optimizer,
            prediction,
            head_conv,
            self_condition,
            parallel_block,
            feature_aggregation,
            resume,
            overwrite,
            keep_checkpoints,
            checkpoint_every,
            on_divergence,
            checkpointing,
            transport,
            sequence_parallel,
        } => train(
            common,
            Schedule {
                steps,
                batch,
                replicas,
                lr,
                transport,
                sequence_parallel,
                keep_checkpoints,
                checkpoint_every,
                on_divergence,
                checkpointing,
            },
            optimizer,
            ModelFlags {
                prediction,
                head_conv,
                self_condition,
                parallel_block,
                feature_aggregation,
            },
            match (resume, overwrite) {
                (true, _) => RunMode::Resume,
                (_, true) => RunMode::Overwrite,
                _ => RunMode::Fresh,
            },
        ),
        Command::Sample {
            common,
            labels,
            seed,
            accelerators,
        } => {
            let trainer = load_trainer(&common);
            let labels = parse_labels(&labels, trainer.config().data.classes());
            let path = common.out.join(format!("sample_seed{seed}.gif"));
            let c = trainer.config();
            let sampler = accelerators.apply(c.sampler);
            sampler
                .check("video_dit sample")
                .unwrap_or_else(|e| fail(format!("{e} (--free-init, --online-sparse)")));
            let videos =
                sample_with_progress(trainer.ema(), c, &labels, sampler, seed, &mut Progress);
            write_video_set(&path, &videos).unwrap_or_else(|e| fail(e));
            println!("wrote {}", path.display());
        }
        Command::Eval {
            common,
            clips,
            guidance,
            sampling_steps,
            shift,
            guidance_max_sigma,
            stochasticity,
            accelerators,
        } => {
            if !(1..=MAX_CLIPS).contains(&clips) {
                fail(format!("--clips must be in 1..={MAX_CLIPS}, got {clips}"));
            }
            let trainer = load_trainer(&common);
            let mut sampler = trainer.config().sampler;
            sampler.guidance = guidance.unwrap_or(sampler.guidance);
            sampler.steps = sampling_steps.unwrap_or(sampler.steps);
            sampler.shift = shift.unwrap_or(sampler.shift);
            sampler.guidance_max_sigma = guidance_max_sigma.unwrap_or(sampler.guidance_max_sigma);
            sampler.stochasticity = stochasticity.unwrap_or(sampler.stochasticity);
            let sampler = accelerators.apply(sampler);
            sampler.check("video_dit eval").unwrap_or_else(|e| fail(format!("{e} (--guidance, --sampling-steps, --shift, --guidance-max-sigma, --stochasticity, --free-init, --online-sparse)")));
            println!("sampler: {sampler:?}");
            let start = std::time::Instant::now();
            let Evaluation {
                samples: videos,
                sample_metrics: samples,
                real_metrics: real,
                ..
            } = trainer.evaluate(clips, sampler, &mut Progress);
            println!(
                "evaluated {clips} clips in {:.1} s (sampling and measuring)",
                start.elapsed().as_secs_f64()
            );
            let path = common.out.join(format!(
                "eval_guidance{}_below{}_steps{}_shift{}_eta{}{}.gif",
                sampler.guidance,
                sampler.guidance_max_sigma,
                sampler.steps,
                sampler.shift,
                sampler.stochasticity,
                accelerators.file_suffix()
            ));
            // The metrics first: they are the result, and stay on screen if the GIF fails.
            println!(
                "samples: {}",
                serde_json::to_string_pretty(&samples).unwrap()
            );
            println!(
                "{}",
                confusion_table(trainer.config().data.classes(), &samples)
            );
            println!(
                "held-out real clips: {}",
                serde_json::to_string_pretty(&real).unwrap()
            );
            write_video_set(&path, &videos).unwrap_or_else(|e| fail(e));
            println!("wrote {}", path.display());
        }
    }
}
