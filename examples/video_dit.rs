//! Train, sample and evaluate the video DiT with DSV sparse attention.
//!
//! ```text
//! cargo run --release --example video_dit -- train [--out out/tiny] [--attention dsv|dense]
//!     [--steps 2700] [--replicas 2] [--optimizer muon|adamw] [--prediction velocity|clean] [--head-conv] [--self-condition]
//!     [--lr 2e-3] [--device flex|ndarray|wgpu|vulkan|cuda] [--resume]
//! mpirun -np 2 target/release/examples/video_dit train --transport mpi [--replicas 1] …
//! cargo run --release --example video_dit -- sample --out out/tiny --labels circle:red,square:blue
//! cargo run --release --example video_dit -- eval --out out/tiny
//! ```
//! `train` writes under `--out`: periodic `samples/step_N.gif`, `samples.gif` (12 of the 48
//! clips the report measures), `contact_sheet.png`, `loss.png`, `report.json`, `report.md`
//! and `checkpoints/`. With `--transport mpi` (a build with `--features mpi`) every process of
//! the MPI job is one data-parallel rank: the batch is shared out over `ranks × replicas`
//! shares and the gradients summed over the ranks, and rank 0 writes every file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use burn_sparse_video::dit::data::{COLOURS, DataSource, FASHION_DIR, parse_label};
use burn_sparse_video::dit::media::{
    Frames, contact_sheet, plot_lines, tile, upscale, write_gif, write_png,
};
use burn_sparse_video::dit::metrics::{ObjectClassifier, VideoMetrics, measure};
use burn_sparse_video::dit::optim::OptimizerKind;
use burn_sparse_video::dit::sample::SamplerConfig;
use burn_sparse_video::dit::train::{TrainConfig, Trainer, generate, saved_config};
use burn_sparse_video::dit::{AttentionKind, Prediction, VideoDitConfig};
use burn_sparse_video::sparse_attn::dsv::DsvHost;
use clap::{Parser, Subcommand, ValueEnum};

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/ranks.rs"]
mod ranks;
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
    /// Self-attention of the DiT.
    #[arg(long, value_enum, default_value = "dsv")]
    attention: AttentionChoice,
    /// Training clips.
    #[arg(long, value_enum, default_value = "shapes")]
    data: DataChoice,
    /// Folder of the Fashion-MNIST `.gz` files (`apt install dataset-fashion-mnist`).
    #[arg(long, default_value = FASHION_DIR)]
    fashion_dir: PathBuf,
}

impl Common {
    fn data_source(&self) -> DataSource {
        match self.data {
            DataChoice::Shapes => DataSource::BouncingShapes,
            DataChoice::Fashion => DataSource::MovingFashion {
                dir: self.fashion_dir.clone(),
            },
        }
    }
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
        #[arg(long)]
        resume: bool,
        /// `threads`: this process alone; `mpi`: one data-parallel rank per process of the MPI
        /// job (`mpirun -np N`).
        #[arg(long, value_enum, default_value_t = Transport::Threads)]
        transport: Transport,
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
    },
    /// Sample clips from the latest checkpoint.
    Sample {
        #[command(flatten)]
        common: Common,
        /// `object:colour` pairs, comma separated (shapes: square, circle, triangle; Fashion-MNIST:
        /// t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle-boot).
        #[arg(
            long,
            default_value = "square:red,circle:green,triangle:blue,circle:yellow"
        )]
        labels: String,
        /// Noise seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Measure samples of the latest checkpoint against held-out real clips.
    Eval {
        #[command(flatten)]
        common: Common,
        /// Clips to generate and compare.
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
    },
}

fn device(choice: DeviceChoice) -> Device {
    let name = choice.to_possible_value().expect("every choice has a name");
    try_device_named(name.get_name()).unwrap_or_else(|e| fail(&format!("--device: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

/// The tiny preset (the library's), with the command line's attention, data, steps and batch.
fn train_config(common: &Common, steps: Option<usize>, batch: Option<usize>) -> TrainConfig {
    let kind = match common.attention {
        AttentionChoice::Dense => AttentionKind::Dense,
        AttentionChoice::Dsv => AttentionKind::tiny_dsv(),
    };
    let mut config = TrainConfig::tiny(VideoDitConfig::tiny().with_attention(kind));
    config.data = common.data_source();
    if let Some(steps) = steps {
        config = config.with_steps(steps);
    }
    if let Some(batch) = batch {
        config.batch_size = batch;
    }
    config
}

fn parse_labels(text: &str, classes: &[&str]) -> Vec<(usize, usize)> {
    text.split(',')
        .map(|pair| parse_label(pair, classes).unwrap_or_else(|e| fail(&format!("--labels: {e}"))))
        .collect()
}

/// One label per object×colour pair, cycled.
fn showcase_labels(n: usize, classes: usize) -> Vec<(usize, usize)> {
    (0..n)
        .map(|i| (i % classes, (i / classes + i) % COLOURS.len()))
        .collect()
}

fn write_video_set(path: &Path, videos: &[Frames]) {
    let grid = tile(&videos.iter().map(|v| upscale(v, 3)).collect::<Vec<_>>(), 4);
    write_gif(path, &grid, 6).unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())));
}

/// Samples of the trainer's EMA model and held-out real clips, measured alike.
fn evaluate(
    trainer: &Trainer,
    clips: usize,
    sampler: SamplerConfig,
) -> (Vec<Frames>, Vec<(usize, usize)>, VideoMetrics, VideoMetrics) {
    let c = trainer.config();
    let real: Vec<_> = (c.dataset_size..c.dataset_size + clips)
        .map(|i| trainer.data().generate(i))
        .collect();
    let labels: Vec<(usize, usize)> = real.iter().map(|r| (r.object, r.colour)).collect();
    let real_frames: Vec<Frames> = real
        .iter()
        .map(|r| Frames::from_chw(&r.pixels, c.clip.frames, c.clip.height, c.clip.width))
        .collect();
    let trajectories: Vec<Vec<(f32, f32)>> = real.iter().map(|r| r.trajectory.clone()).collect();
    let classifier = ObjectClassifier::for_set(trainer.data(), 2000);
    let real_metrics = measure(&real_frames, &labels, Some(&trajectories), &classifier);
    let samples = generate(trainer.ema(), c.clip, &labels, sampler, 1234);
    let sample_metrics = measure(&samples, &labels, None, &classifier);
    (samples, labels, sample_metrics, real_metrics)
}

fn load_trainer(common: &Common) -> Trainer {
    let mut config = train_config(common, Some(1), None);
    // Resuming rebuilds the run's model and optimiser, whichever preset it trained with;
    // only the attention comes from the command line (and must match).
    let saved = saved_config(&common.out).unwrap_or_else(|e| fail(&format!("{e} (train first)")));
    config.optimizer = saved.optimizer;
    config.model = VideoDitConfig {
        attention: config.model.attention,
        ..saved.model
    };
    let mut trainer = Trainer::new(config, &device(common.device))
        .unwrap_or_else(|e| fail(&format!("--data: {e}")));
    trainer.resume(&common.out).unwrap_or_else(|e| {
        fail(&format!(
            "{e} (train first, with the same --attention and --data)"
        ))
    });
    trainer
}

/// Model options of `train` beyond the tiny preset.
struct ModelFlags {
    prediction: Option<PredictionChoice>,
    head_conv: bool,
    self_condition: bool,
}

/// How much `train` trains, and how.
struct Schedule {
    steps: Option<usize>,
    batch: Option<usize>,
    replicas: Option<usize>,
    lr: Option<f64>,
    transport: Transport,
}

fn train(
    common: Common,
    schedule: Schedule,
    optimizer: Option<OptimizerChoice>,
    flags: ModelFlags,
    resume: bool,
) {
    let Schedule {
        steps,
        batch,
        replicas,
        lr,
        transport,
    } = schedule;
    if steps == Some(0) || batch == Some(0) {
        fail("--steps and --batch must be ≥ 1");
    }
    let out = &common.out;
    let mut config = train_config(&common, steps, batch);
    let batch = config.batch_size;
    if replicas.is_some_and(|r| r == 0 || r > batch) {
        fail(&format!(
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
    if let Some(lr) = lr {
        if !(lr > 0.0 && lr.is_finite()) {
            fail(&format!("--lr must be a positive number, got {lr}"));
        }
        config.lr = lr;
    }
    let device = device(common.device);
    let trained = on_ranks(transport, 1, &device, |comm| {
        let lead = comm.rank() == 0;
        if lead {
            std::fs::create_dir_all(out.join("samples"))
                .unwrap_or_else(|e| fail(&format!("creating {}: {e}", out.display())));
        }
        let mut trainer =
            Trainer::new(config.clone(), &device).unwrap_or_else(|e| fail(&format!("--data: {e}")));
        if resume {
            trainer.resume(out).unwrap_or_else(|e| fail(&e.to_string()));
            if lead {
                println!("resumed at step {}", trainer.step());
            }
        }
        if comm.world() > 1 && lead {
            println!(
                "data parallel over {} MPI processes, {} shares of the batch each",
                comm.world(),
                trainer.config().replicas
            );
        }
        let trainer = trainer.with_communicator(comm)?;
        train_loop(trainer, &common, lead);
        Ok(())
    });
    trained.unwrap_or_else(|e| fail(&e));
}

/// The training loop; the lead rank logs, samples, saves and reports.
fn train_loop(mut trainer: Trainer, common: &Common, lead: bool) {
    let out = &common.out;
    let c = trainer.config().clone();
    if !lead {
        while trainer.step() < c.steps {
            trainer.train_step();
        }
        return;
    }
    println!(
        "training the tiny DiT ({} attention) on {:?}: {} steps × {} clips of {}×{}×{}",
        if common.attention == AttentionChoice::Dsv {
            "DSV"
        } else {
            "dense"
        },
        trainer.model().devices()[0],
        c.steps,
        c.batch_size,
        c.clip.frames,
        c.clip.height,
        c.clip.width
    );
    let start = Instant::now();
    let first = trainer.step();
    let showcase = showcase_labels(8, c.data.classes().len());
    while trainer.step() < c.steps {
        let log = trainer.train_step();
        let done = trainer.step();
        if done.is_multiple_of(c.log_every) || done == c.steps {
            let rate = (done - first) as f64 / start.elapsed().as_secs_f64();
            let bar = (done * 30 / c.steps).min(30);
            let recent: Vec<f32> = trainer
                .history()
                .iter()
                .rev()
                .take(c.log_every)
                .map(|l| l.loss)
                .collect();
            let dsv = match (log.mean_sparsity, log.predictor_loss) {
                (Some(s), p) => format!(
                    " | dsv: {}/{} layers sparse, sparsity {:.2}, predictor loss {:.3}",
                    log.sparse_layers,
                    c.model.depth,
                    s,
                    p.unwrap_or(f32::NAN)
                ),
                (None, Some(p)) => format!(" | dsv: dense stage, predictor loss {p:.3}"),
                _ => String::new(),
            };
            println!(
                "[{}{}] {done}/{} loss {:.4} | {:.2} steps/s{dsv}",
                "#".repeat(bar),
                "-".repeat(30 - bar),
                c.steps,
                recent.iter().sum::<f32>() / recent.len() as f32,
                rate
            );
        }
        if c.sample_every > 0 && done.is_multiple_of(c.sample_every) && done < c.steps {
            write_video_set(
                &out.join(format!("samples/step_{done:06}.gif")),
                &trainer.sample(&showcase, 7),
            );
        }
        if c.checkpoint_every > 0 && done.is_multiple_of(c.checkpoint_every) && done < c.steps {
            trainer
                .save_checkpoint(out)
                .unwrap_or_else(|e| fail(&format!("saving checkpoint: {e}")));
        }
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let ckpt = trainer
        .save_checkpoint(out)
        .unwrap_or_else(|e| fail(&format!("saving checkpoint: {e}")));
    write_report(
        &trainer,
        common,
        train_seconds,
        (trainer.step() - first) as f64 / train_seconds,
    );
    println!("checkpoint: {}", ckpt.display());
}

/// Held-out labels the report samples and measures: with 12, one run's share of right
/// shapes read 0.75 where 48 labels gave 0.42.
const REPORT_CLIPS: usize = 48;

fn write_report(trainer: &Trainer, common: &Common, train_seconds: f64, steps_per_second: f64) {
    let out = &common.out;
    let (samples, labels, sample_metrics, real_metrics) =
        evaluate(trainer, REPORT_CLIPS, trainer.config().sampler);
    write_video_set(&out.join("samples.gif"), &samples[..12]);
    let (w, h, sheet) = contact_sheet(
        &samples
            .iter()
            .take(6)
            .map(|v| upscale(v, 2))
            .collect::<Vec<_>>(),
    );
    write_png(&out.join("contact_sheet.png"), w, h, &sheet)
        .unwrap_or_else(|e| fail(&format!("contact sheet: {e}")));
    let losses: Vec<f32> = trainer.history().iter().map(|l| l.loss).collect();
    let smooth: Vec<f32> = losses
        .windows(10.min(losses.len()).max(1))
        .map(|w| w.iter().sum::<f32>() / w.len() as f32)
        .collect();
    write_png(
        &out.join("loss.png"),
        480,
        240,
        &plot_lines(
            &[(&losses, [180, 180, 220]), (&smooth, [20, 40, 200])],
            480,
            240,
        ),
    )
    .unwrap_or_else(|e| fail(&format!("loss plot: {e}")));

    let layers: Vec<_> = trainer
        .model()
        .dsv_layers()
        .iter()
        .map(|l| l.stats())
        .collect();
    let final_loss = smooth.last().copied().unwrap_or(f32::NAN);
    let report = serde_json::json!({
        "attention": if common.attention == AttentionChoice::Dsv { "dsv" } else { "dense" },
        "steps": trainer.step(),
        "train_seconds": train_seconds,
        "steps_per_second": steps_per_second,
        "final_loss_smoothed": final_loss,
        "config": trainer.config(),
        "dsv_layers": layers.iter().enumerate().map(|(i, s)| serde_json::json!({
            "layer": i, "stage": format!("{:?}", s.stage), "head_sparsity": s.head_sparsity, "head_budgets": s.head_budgets,
            "predictor_loss": s.predictor_loss, "critical_recall": s.critical_recall, "ran_sparse": s.ran_sparse, "seq_len": s.seq_len,
        })).collect::<Vec<_>>(),
        "samples": { "labels": labels, "metrics": sample_metrics },
        "heldout_real": real_metrics,
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap_or_else(|e| fail(&format!("report: {e}")));
    let mut md = format!(
        "# Tiny video DiT — {} attention, {:?}\n\n{} steps in {:.0} s ({:.2} steps/s), final loss (10-step mean) {:.4}.\n\n",
        if common.attention == AttentionChoice::Dsv {
            "DSV"
        } else {
            "dense"
        },
        trainer.config().data,
        trainer.step(),
        train_seconds,
        steps_per_second,
        final_loss
    );
    if !layers.is_empty() {
        md += "| layer | stage | runs | mean sparsity | budgets | predictor loss | recall |\n|---|---|---|---|---|---|---|\n";
        for (i, s) in layers.iter().enumerate() {
            let mean = |v: &Option<Vec<f32>>| {
                v.as_ref()
                    .map(|v| format!("{:.3}", v.iter().sum::<f32>() / v.len() as f32))
                    .unwrap_or("-".into())
            };
            md += &format!(
                "| {i} | {:?} | {} | {} | {:?} | {} | {} |\n",
                s.stage,
                if s.ran_sparse { "sparse" } else { "dense" },
                mean(&s.head_sparsity),
                s.head_budgets,
                s.predictor_loss
                    .map(|l| format!("{l:.4}"))
                    .unwrap_or("-".into()),
                mean(&s.critical_recall)
            );
        }
        md += "\n";
    }
    md += "| metric | samples | held-out real clips |\n|---|---|---|\n";
    let rows = [
        (
            "temporal flickering (1 = steady)",
            sample_metrics.temporal_flickering,
            real_metrics.temporal_flickering,
        ),
        (
            "motion smoothness (1 = linear)",
            sample_metrics.motion_smoothness,
            real_metrics.motion_smoothness,
        ),
        (
            "dynamic degree (mean |Δframe|, 0–255)",
            sample_metrics.dynamic_degree,
            real_metrics.dynamic_degree,
        ),
        (
            "object detected (share of frames)",
            sample_metrics.detection_rate,
            real_metrics.detection_rate,
        ),
        (
            "exactly one object (share of frames)",
            sample_metrics.single_object_rate,
            real_metrics.single_object_rate,
        ),
        (
            "object class matches the label",
            sample_metrics.object_accuracy,
            real_metrics.object_accuracy,
        ),
        (
            "colour matches the label",
            sample_metrics.colour_accuracy,
            real_metrics.colour_accuracy,
        ),
        (
            "area variation (0 = rigid)",
            sample_metrics.area_variation,
            real_metrics.area_variation,
        ),
        (
            "centroid acceleration px (0 = constant velocity)",
            sample_metrics.acceleration_px,
            real_metrics.acceleration_px,
        ),
    ];
    let shape_fit = sample_metrics
        .shape_iou
        .zip(real_metrics.shape_iou)
        .map(|(s, r)| {
            (
                "shape IoU with the asked-for shape (1 = drawn exactly)",
                s,
                r,
            )
        });
    for (name, s, r) in rows.into_iter().chain(shape_fit) {
        md += &format!("| {name} | {s:.3} | {r:.3} |\n");
    }
    md += &confusion_table(trainer.config().data.classes(), &sample_metrics);
    md += &format!(
        "\nDetector check on real clips: centroid error vs ground truth {:.2} px.\n\nFiles: samples.gif, contact_sheet.png, loss.png, report.json, samples/, checkpoints/.\n",
        real_metrics.trajectory_error_px.unwrap_or(f64::NAN)
    );
    std::fs::write(out.join("report.md"), &md).unwrap_or_else(|e| fail(&format!("report: {e}")));
    println!("{md}");
}

/// The samples' object classes as the classifier saw them, by asked-for class.
fn confusion_table(classes: &[&str], metrics: &VideoMetrics) -> String {
    let mut md = format!(
        "\nObject class seen in the samples (majority over frames), by class asked for:\n\n| asked \\ seen | {} | none |\n|---|{}---|\n",
        classes.join(" | "),
        "---|".repeat(classes.len())
    );
    for (name, row) in classes.iter().zip(&metrics.object_confusion) {
        md += &format!(
            "| {name} | {} |\n",
            row.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    if !metrics.shape_iou_by_class.is_empty() {
        md += &format!(
            "\nMean shape IoU of the samples with each drawn shape, by class asked for:\n\n| asked \\ fitted | {} |\n|---|{}\n",
            classes.join(" | "),
            "---|".repeat(classes.len())
        );
        for (name, row) in classes.iter().zip(&metrics.shape_iou_by_class) {
            md += &format!(
                "| {name} | {} |\n",
                row.iter()
                    .map(|v| format!("{v:.3}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }
    md
}

fn main() {
    allocator::keep_freed_memory();
    match Cli::parse().command {
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
            resume,
            transport,
        } => train(
            common,
            Schedule {
                steps,
                batch,
                replicas,
                lr,
                transport,
            },
            optimizer,
            ModelFlags {
                prediction,
                head_conv,
                self_condition,
            },
            resume,
        ),
        Command::Sample {
            common,
            labels,
            seed,
        } => {
            let trainer = load_trainer(&common);
            let labels = parse_labels(&labels, trainer.config().data.classes());
            let path = common.out.join(format!("sample_seed{seed}.gif"));
            write_video_set(&path, &trainer.sample(&labels, seed));
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
        } => {
            let trainer = load_trainer(&common);
            let mut sampler = trainer.config().sampler;
            sampler.guidance = guidance.unwrap_or(sampler.guidance);
            sampler.steps = sampling_steps.unwrap_or(sampler.steps);
            sampler.shift = shift.unwrap_or(sampler.shift);
            sampler.guidance_max_sigma = guidance_max_sigma.unwrap_or(sampler.guidance_max_sigma);
            sampler.stochasticity = stochasticity.unwrap_or(sampler.stochasticity);
            sampler.check("video_dit eval").unwrap_or_else(|e| fail(&format!("{e} (--guidance, --sampling-steps, --shift, --guidance-max-sigma, --stochasticity)")));
            println!("sampler: {sampler:?}");
            let (videos, _, samples, real) = evaluate(&trainer, clips, sampler);
            let path = common.out.join(format!(
                "eval_guidance{}_below{}_steps{}_shift{}_eta{}.gif",
                sampler.guidance,
                sampler.guidance_max_sigma,
                sampler.steps,
                sampler.shift,
                sampler.stochasticity
            ));
            write_video_set(&path, &videos);
            println!("wrote {}", path.display());
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
        }
    }
}
