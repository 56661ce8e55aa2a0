//! The run report: what `report.json` and `report.md` say about a finished run.

use burn_sparse_attn::dsv::{DsvHost, DsvLayerStats};

use super::{StepLog, Trainer};
use crate::config::AttentionKind;
use crate::metrics::VideoMetrics;

/// Steps averaged into the report's smoothed loss.
pub const LOSS_WINDOW: usize = 10;

/// A finished run's figures: training, DSV layers, and the metrics of its samples next to
/// held-out real clips measured alike.
pub struct RunReport<'a> {
    trainer: &'a Trainer,
    train_seconds: f64,
    steps_per_second: f64,
    labels: &'a [(usize, usize)],
    samples: &'a VideoMetrics,
    real: &'a VideoMetrics,
    layers: Vec<DsvLayerStats>,
}

/// `dense`, `dsv` or `dual-scope`: the self-attention a run trains with.
pub fn attention_name(attention: &AttentionKind) -> &'static str {
    match attention {
        AttentionKind::Dense => "dense",
        AttentionKind::Dsv(_) => "dsv",
        AttentionKind::DualScope(_) => "dual-scope",
    }
}

/// Each loss averaged with up to `window − 1` before it (one value per full window; the raw
/// losses when there are fewer).
pub fn smoothed_losses(history: &[StepLog], window: usize) -> Vec<f32> {
    let losses: Vec<f32> = history.iter().map(|l| l.loss).collect();
    losses
        .windows(window.min(losses.len()).max(1))
        .map(|w| w.iter().sum::<f32>() / w.len() as f32)
        .collect()
}

impl<'a> RunReport<'a> {
    /// The report of `trainer`'s run: `labels` were sampled and measured as `samples`, the
    /// held-out real clips with the same labels as `real`.
    pub fn new(
        trainer: &'a Trainer,
        train_seconds: f64,
        steps_per_second: f64,
        labels: &'a [(usize, usize)],
        samples: &'a VideoMetrics,
        real: &'a VideoMetrics,
    ) -> Self {
        let layers = trainer
            .model()
            .dsv_layers()
            .iter()
            .map(|l| l.stats())
            .collect();
        Self {
            trainer,
            train_seconds,
            steps_per_second,
            labels,
            samples,
            real,
            layers,
        }
    }

    /// The smoothed loss of the last steps (NaN before any step).
    pub fn final_loss(&self) -> f32 {
        smoothed_losses(self.trainer.history(), LOSS_WINDOW)
            .last()
            .copied()
            .unwrap_or(f32::NAN)
    }

    /// `report.json`.
    pub fn to_json(&self) -> serde_json::Value {
        let trainer = self.trainer;
        let (layers, labels) = (&self.layers, self.labels);
        let (train_seconds, steps_per_second) = (self.train_seconds, self.steps_per_second);
        let (sample_metrics, real_metrics) = (self.samples, self.real);
        let final_loss = self.final_loss();
        serde_json::json!({
            "attention": attention_name(&trainer.config().model.attention),
            "steps": trainer.step(),
            "train_seconds": train_seconds,
            "steps_per_second": steps_per_second,
            "skipped_steps": trainer.skipped_steps(),
            "final_loss_smoothed": final_loss,
            "config": trainer.config(),
            "dsv_layers": layers.iter().enumerate().map(|(i, s)| serde_json::json!({
                "layer": i, "stage": format!("{:?}", s.stage), "head_sparsity": s.head_sparsity, "head_budgets": s.head_budgets,
                "predictor_loss": s.predictor_loss, "critical_recall": s.critical_recall, "ran_sparse": s.ran_sparse, "seq_len": s.seq_len,
            })).collect::<Vec<_>>(),
            "samples": { "labels": labels, "metrics": sample_metrics },
            "heldout_real": real_metrics,
        })
    }

    /// `report.md`.
    pub fn to_markdown(&self) -> String {
        let trainer = self.trainer;
        let layers = &self.layers;
        let (train_seconds, steps_per_second) = (self.train_seconds, self.steps_per_second);
        let (sample_metrics, real_metrics) = (self.samples, self.real);
        let final_loss = self.final_loss();
        let mut md = format!(
            "# Tiny video DiT — {} attention, {:?}\n\n{} steps in {:.0} s ({:.2} steps/s), final loss (10-step mean) {:.4}.\n\n",
            attention_name(&trainer.config().model.attention).replace("dsv", "DSV"),
            trainer.config().data,
            trainer.step(),
            train_seconds,
            steps_per_second,
            final_loss
        );
        let skipped = trainer.skipped_steps();
        if skipped > 0 {
            md += &format!(
                "{skipped} steps had a NaN or infinite loss or gradient and were skipped by the \
                 divergence guard (learning rate lowered at each).\n\n"
            );
        }
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
        md += &confusion_table(trainer.config().data.classes(), sample_metrics);
        md += &format!(
            "\nDetector check on real clips: centroid error vs ground truth {:.2} px.\n\nFiles: samples.gif, contact_sheet.png, loss.png, report.json, samples/, checkpoints/.\n",
            real_metrics.trajectory_error_px.unwrap_or(f64::NAN)
        );
        md
    }
}

/// The samples' object classes as the classifier saw them, by asked-for class.
pub fn confusion_table(classes: &[&str], metrics: &VideoMetrics) -> String {
    let mut md = format!(
        "\nObject class seen in the samples (majority over frames), by class asked for:\n\n| asked \\ seen | {} | none |\n|---|{}---|\n",
        classes.join(" | "),
        "---|".repeat(classes.len())
    );
    md += &class_rows(classes, &metrics.object_confusion, |n| n.to_string());
    if !metrics.shape_iou_by_class.is_empty() {
        md += &format!(
            "\nMean shape IoU of the samples with each drawn shape, by class asked for:\n\n| asked \\ fitted | {} |\n|---|{}\n",
            classes.join(" | "),
            "---|".repeat(classes.len())
        );
        md += &class_rows(classes, &metrics.shape_iou_by_class, |v| format!("{v:.3}"));
    }
    md
}

/// One markdown row per class: its name, then its cells.
fn class_rows<T>(classes: &[&str], rows: &[Vec<T>], cell: impl Fn(&T) -> String) -> String {
    classes
        .iter()
        .zip(rows)
        .map(|(name, row)| {
            let cells: Vec<String> = row.iter().map(&cell).collect();
            format!("| {name} | {} |\n", cells.join(" | "))
        })
        .collect()
}
