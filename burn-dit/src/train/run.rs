//! A training run in its folder from first step to report: progress at the log interval,
//! checkpoints and progress samples at theirs, a last checkpoint, then the report (samples
//! of held-out labels measured against the real clips, GIF, contact sheet, loss plot,
//! `report.json` and `report.md`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;

use super::report::{LOSS_WINDOW, RunReport, attention_name, smoothed_losses};
use super::{TrainConfig, TrainError, Trainer, generate_with_progress, write_atomically};
use crate::VideoDit;
use crate::data::COLOURS;
use crate::media::{Frames, contact_sheet, plot_lines, tile, upscale, write_gif, write_png};
use crate::metrics::{HeldOut, VideoMetrics};
use crate::sample::SamplerConfig;

/// Held-out labels the report samples and measures: with 12, one run's share of right
/// shapes read 0.75 where 48 labels gave 0.42.
pub const REPORT_CLIPS: usize = 48;

/// Where a run's progress goes, and whether it should stop early.
pub trait RunProgress {
    /// A progress line for the user.
    fn line(&mut self, text: &str);

    /// A problem the run carries on after.
    fn warning(&mut self, text: &str) {
        eprintln!("warning: {text}");
    }

    /// Asked after every step of the lead rank: `true` ends the run there, with a checkpoint
    /// of that step ([`RunEnd::Stopped`]).
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// Progress lines on standard output, warnings on standard error; the run never stops early.
pub struct PrintProgress;

impl RunProgress for PrintProgress {
    fn line(&mut self, text: &str) {
        println!("{text}");
    }
}

/// How [`Trainer::run`] ended.
#[derive(Debug, PartialEq)]
pub enum RunEnd {
    /// At the configured steps; the lead rank saved `checkpoint` and wrote the report (other
    /// ranks save nothing).
    Finished {
        /// The last checkpoint (lead rank).
        checkpoint: Option<PathBuf>,
    },
    /// On request, after saving `checkpoint`; `train --resume` continues the run.
    Stopped {
        /// The checkpoint of the last step.
        checkpoint: PathBuf,
    },
}

/// Why [`Trainer::run`] failed.
#[derive(Debug)]
pub enum RunError {
    /// A training step failed ([`Trainer::try_train_step`]).
    Step(TrainError),
    /// A checkpoint or the report could not be written.
    Write(std::io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step(e) => write!(f, "{e}"),
            Self::Write(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// `e` with what was being written.
fn writing(what: &str) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |e| RunError::Write(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Samples of a trainer's EMA model for the held-out labels, and both measured alike.
pub struct Evaluation {
    /// One sample per held-out label.
    pub samples: Vec<Frames>,
    /// The held-out `(object, colour)` labels.
    pub labels: Vec<(usize, usize)>,
    /// The metrics of the samples.
    pub sample_metrics: VideoMetrics,
    /// The metrics of the held-out real clips.
    pub real_metrics: VideoMetrics,
}

impl Trainer {
    /// Trains up to the configured steps with run folder `out` (locked by the caller's
    /// [`RunDir`](super::RunDir)). The lead rank reports progress every `log_every` steps,
    /// saves a checkpoint every `checkpoint_every` and a progress GIF every `sample_every`
    /// (a failed GIF is a warning), stops early when `progress` asks, saves the last step
    /// and, at the configured steps, writes the report. Other ranks only train.
    pub fn run(
        &mut self,
        out: &Path,
        lead: bool,
        progress: &mut impl RunProgress,
    ) -> Result<RunEnd, RunError> {
        let c = self.config().clone();
        if !lead {
            while self.step() < c.steps {
                self.try_train_step().map_err(RunError::Step)?;
            }
            return Ok(RunEnd::Finished { checkpoint: None });
        }
        progress.line(&format!(
            "training the tiny DiT ({} attention) on {:?}: {} steps × {} clips of {}×{}×{}",
            attention_name(&c.model.attention).replace("dsv", "DSV"),
            self.model().devices()[0],
            c.steps,
            c.batch_size,
            c.clip.frames,
            c.clip.height,
            c.clip.width
        ));
        let start = Instant::now();
        let first = self.step();
        let showcase = showcase_labels(8, c.data.classes().len());
        let mut saved: Option<PathBuf> = None;
        let mut stopped = false;
        while self.step() < c.steps {
            let log = self.try_train_step().map_err(RunError::Step)?;
            if log.skipped {
                progress.line(&format!(
                    "step {}: loss or gradient not finite (loss {}); step skipped, learning rate \
                     lowered",
                    log.step, log.loss
                ));
            }
            let done = self.step();
            if done.is_multiple_of(c.log_every) || done == c.steps {
                progress.line(&self.progress_line(&c, first, start));
            }
            if c.checkpoint_every > 0 && done.is_multiple_of(c.checkpoint_every) && done < c.steps {
                saved = Some(
                    self.save_checkpoint(out)
                        .map_err(writing("saving checkpoint"))?,
                );
            }
            // A progress GIF is worth less than the run: a failed one (a full disk) is reported.
            if c.sample_every > 0 && done.is_multiple_of(c.sample_every) && done < c.steps {
                let path = out.join(format!("samples/step_{done:06}.gif"));
                if let Err(e) = write_video_set(&path, &self.sample(&showcase, 7)) {
                    progress.warning(&format!("{e}; training goes on"));
                }
            }
            if progress.stop_requested() {
                stopped = true;
                break;
            }
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let step_dir = out.join(format!("checkpoints/step_{:06}", self.step()));
        let checkpoint = match saved {
            Some(path) if path == step_dir => path,
            _ => self
                .save_checkpoint(out)
                .map_err(writing("saving checkpoint"))?,
        };
        if stopped {
            return Ok(RunEnd::Stopped { checkpoint });
        }
        let steps_per_second = (self.step() - first) as f64 / train_seconds;
        self.write_report(out, train_seconds, steps_per_second, progress)?;
        Ok(RunEnd::Finished {
            checkpoint: Some(checkpoint),
        })
    }

    /// The progress bar, smoothed loss, speed, times and DSV state after a step.
    fn progress_line(&self, c: &TrainConfig, first: usize, start: Instant) -> String {
        let done = self.step();
        let log = self.history().last().expect("a step was logged");
        let elapsed = start.elapsed().as_secs_f64();
        let rate = (done - first) as f64 / elapsed;
        let bar = (done * 30 / c.steps).min(30);
        let recent: Vec<f32> = self
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
        format!(
            "[{}{}] {done}/{} loss {:.4} | {:.2} steps/s, {} elapsed, ETA {}{dsv}",
            "#".repeat(bar),
            "-".repeat(30 - bar),
            c.steps,
            recent.iter().sum::<f32>() / recent.len() as f32,
            rate,
            clock(elapsed),
            clock((c.steps - done) as f64 / rate)
        )
    }

    /// Samples of the EMA model for the first `clips` held-out labels, measured against
    /// those clips ([`HeldOut`]); sampling reports its progress.
    pub fn evaluate(
        &self,
        clips: usize,
        sampler: SamplerConfig,
        progress: &mut impl RunProgress,
    ) -> Evaluation {
        let c = self.config();
        let held_out = HeldOut::new(self.data(), c.dataset_size, clips);
        let real_metrics = held_out.real_metrics();
        let labels = held_out.labels().to_vec();
        let samples = sample_with_progress(self.ema(), c, &labels, sampler, 1234, progress);
        Evaluation {
            sample_metrics: held_out.measure(&samples),
            samples,
            labels,
            real_metrics,
        }
    }

    /// The report of a finished run in `out`: `samples.gif` (12 held-out labels),
    /// `contact_sheet.png`, `loss.png`, `report.json` and `report.md` (also shown).
    fn write_report(
        &self,
        out: &Path,
        train_seconds: f64,
        steps_per_second: f64,
        progress: &mut impl RunProgress,
    ) -> Result<(), RunError> {
        let eval = self.evaluate(REPORT_CLIPS, self.config().sampler, progress);
        write_video_set(&out.join("samples.gif"), &eval.samples[..12]).map_err(RunError::Write)?;
        let (w, h, sheet) = contact_sheet(
            &eval
                .samples
                .iter()
                .take(6)
                .map(|v| upscale(v, 2))
                .collect::<Vec<_>>(),
        );
        write_png(&out.join("contact_sheet.png"), w, h, &sheet)
            .map_err(writing("contact sheet"))?;
        let losses: Vec<f32> = self.history().iter().map(|l| l.loss).collect();
        let smooth = smoothed_losses(self.history(), LOSS_WINDOW);
        let plot = plot_lines(
            &[(&losses, [180, 180, 220]), (&smooth, [20, 40, 200])],
            480,
            240,
        );
        write_png(&out.join("loss.png"), 480, 240, &plot).map_err(writing("loss plot"))?;
        let report = RunReport::new(
            self,
            train_seconds,
            steps_per_second,
            &eval.labels,
            &eval.sample_metrics,
            &eval.real_metrics,
        );
        let json = serde_json::to_string_pretty(&report.to_json()).expect("the report serialises");
        let md = report.to_markdown();
        for (name, text) in [("report.json", &json), ("report.md", &md)] {
            let path = out.join(name);
            write_atomically(&path, |file| file.write_all(text.as_bytes()))
                .map_err(writing(&format!("writing {}", path.display())))?;
        }
        progress.line(&md);
        Ok(())
    }
}

/// Samples `labels` with `model`, a progress line per chunk.
pub fn sample_with_progress(
    model: &VideoDit,
    config: &TrainConfig,
    labels: &[(usize, usize)],
    sampler: SamplerConfig,
    seed: u64,
    progress: &mut impl RunProgress,
) -> Vec<Frames> {
    let start = Instant::now();
    generate_with_progress(model, config.clip, labels, sampler, seed, |done, n| {
        let elapsed = start.elapsed().as_secs_f64();
        progress.line(&format!(
            "sampling: {done}/{n} clips, {} elapsed, ETA {}",
            clock(elapsed),
            clock(elapsed / done as f64 * (n - done) as f64)
        ));
    })
}

/// Writes `videos` as one GIF grid, 3× upscaled, 4 to a row (whole or not at all).
pub fn write_video_set(path: &Path, videos: &[Frames]) -> std::io::Result<()> {
    let grid = tile(&videos.iter().map(|v| upscale(v, 3)).collect::<Vec<_>>(), 4);
    write_gif(path, &grid, 6)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// `m:ss` (or `h:mm:ss`).
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// One label per object×colour pair, cycled.
fn showcase_labels(n: usize, classes: usize) -> Vec<(usize, usize)> {
    (0..n)
        .map(|i| (i % classes, (i / classes + i) % COLOURS.len()))
        .collect()
}
