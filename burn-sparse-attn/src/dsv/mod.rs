//! DSV attention as a Burn module: a learned low-rank predictor, a sparsity profiler and the
//! two-stage (dense, then sparse) schedule, over video tokens grouped into 3D cubes.

mod attention;
mod grid;
mod predictor;
mod profiler;
mod shards;
mod state;
mod tape;
mod trainer;

pub use attention::{DsvAttention, DsvAttentionConfig, DsvLayerStats, DsvPolicy, DsvStage};
pub use grid::{Reorder, TokenGrid};
pub use predictor::{LowRankPredictor, PredictorInput};
pub use shards::SequenceShards;
pub use state::HostState;
pub use tape::{DsvLayerStep, DsvTape};
pub use trainer::{DsvGradients, DsvHost, DsvStepReport, DsvTrainer};
