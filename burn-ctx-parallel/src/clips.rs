//! Clip parallelism: a long video cut along time into clips, each held by one rank, and the
//! frame-spanning statistics those clips must share.

use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use crate::Halo;
use crate::group::{DeviceGroup, Transport};

/// How a video of `total_frames` frames is cut into clips along time and which rank holds
/// each clip. Clips are contiguous in time and ranks hold contiguous runs of clips, so only
/// neighbouring ranks share a clip boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipLayout {
    frames: Vec<usize>,
    offsets: Vec<usize>,
    owners: Vec<usize>,
    world: usize,
}

impl ClipLayout {
    /// Clips of the given lengths (in frames), spread over `world` ranks in order: rank `r`
    /// holds clips `⌊c·world/clips⌋ = r`, so each rank holds at least one clip.
    pub fn new(clip_frames: Vec<usize>, world: usize) -> Result<Self, SparseAttnError> {
        const F: &str = "ClipLayout::new";
        SparseAttnError::check(world >= 1, F, "world", "≥ 1", world)?;
        SparseAttnError::check(clip_frames.len() >= world, F, "clip_frames", format!("at least one clip per rank ({world})"), clip_frames.len())?;
        SparseAttnError::check(clip_frames.iter().all(|&f| f > 0), F, "clip_frames", "every clip ≥ 1 frame", format!("{clip_frames:?}"))?;
        let n = clip_frames.len();
        let offsets = clip_frames.iter().scan(0, |acc, &f| { let o = *acc; *acc += f; Some(o) }).collect();
        let owners = (0..n).map(|c| c * world / n).collect();
        Ok(Self { frames: clip_frames, offsets, owners, world })
    }

    /// `clips` clips of `frames_per_clip` frames each over `world` ranks.
    pub fn uniform(clips: usize, frames_per_clip: usize, world: usize) -> Result<Self, SparseAttnError> {
        Self::new(vec![frames_per_clip; clips], world)
    }

    /// Number of clips.
    pub fn clips(&self) -> usize {
        self.frames.len()
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Frames of clip `c`.
    pub fn frames(&self, clip: usize) -> usize {
        self.frames[clip]
    }

    /// Global index of the first frame of clip `c`.
    pub fn frame_offset(&self, clip: usize) -> usize {
        self.offsets[clip]
    }

    /// The rank that holds clip `c`.
    pub fn owner(&self, clip: usize) -> usize {
        self.owners[clip]
    }

    /// Frames of the whole video.
    pub fn total_frames(&self) -> usize {
        self.frames.iter().sum()
    }

    /// The clip that holds global frame `frame`.
    pub fn clip_of(&self, frame: usize) -> usize {
        self.offsets.partition_point(|&o| o <= frame) - 1
    }

    /// The same cut with every frame count multiplied by `factor` (video frames ↔ latent or
    /// token frames).
    pub fn scaled(&self, factor: usize) -> Self {
        Self::new(self.frames.iter().map(|f| f * factor).collect(), self.world).expect("scaling keeps a valid layout")
    }
}

/// The slices clip `c` needs from its neighbours along `dim` for anything that looks
/// `halo` slices past its edges (a temporal convolution, a local attention window): the last
/// `halo` slices of clip `c − 1` and the first `halo` of clip `c + 1`, on clip `c`'s rank
/// (a send between ranks, free within one). `None` at the video's two ends and where `halo`
/// is 0.
pub fn clip_halos<T: Transport, const D: usize>(group: &DeviceGroup<T>, layout: &ClipLayout, parts: &[Tensor<D>], dim: usize, halo: usize) -> Result<Vec<Halo<D>>, SparseAttnError> {
    const F: &str = "clip_halos";
    let clips = layout.clips();
    SparseAttnError::check(parts.len() == clips, F, "parts", format!("one tensor per clip ({clips})"), parts.len())?;
    SparseAttnError::check(dim < D, F, "dim", format!("< {D}"), dim)?;
    let shortest = parts.iter().map(|p| p.dims()[dim]).min().unwrap_or(0);
    SparseAttnError::check(clips < 2 || halo <= shortest, F, "halo", format!("≤ the shortest clip's size along dim {dim} ({shortest})"), halo)?;
    let send = |from: usize, to: usize, tail: bool| {
        let len = parts[from].dims()[dim];
        let part = parts[from].clone().narrow(dim, if tail { len - halo } else { 0 }, halo);
        group.send(part, layout.owner(from), layout.owner(to))
    };
    Ok((0..clips).map(|c| ((c > 0 && halo > 0).then(|| send(c - 1, c, true)), (c + 1 < clips && halo > 0).then(|| send(c + 1, c, false)))).collect())
}

/// Mean and variance over `dims` of a tensor split along one of them across clips, computed
/// with one all-reduce of `[Σx, Σx²]` (each clip weighted by its element count), so every
/// clip normalises with the statistics of the whole video — what a GroupNorm or any other
/// frame-spanning norm needs under clip parallelism. Returns per clip `(mean, var)` with the
/// reduced dims kept at size 1, on the clip's device.
pub fn synced_moments<T: Transport, const D: usize>(group: &DeviceGroup<T>, layout: &ClipLayout, parts: Vec<Tensor<D>>, dims: &[usize]) -> Result<Vec<(Tensor<D>, Tensor<D>)>, SparseAttnError> {
    const F: &str = "synced_moments";
    SparseAttnError::check(parts.len() == layout.clips(), F, "parts", format!("one tensor per clip ({})", layout.clips()), parts.len())?;
    SparseAttnError::check(!dims.is_empty() && dims.iter().all(|&d| d < D), F, "dims", format!("1 to {D} dims below {D}"), format!("{dims:?}"))?;
    let count: usize = parts.iter().map(|p| dims.iter().map(|&d| p.dims()[d]).product::<usize>()).sum();
    // Per rank: its clips' sums and sums of squares stacked on a new leading axis.
    let mut per_rank: Vec<Option<Tensor<D>>> = vec![None; group.world()];
    for (c, p) in parts.iter().enumerate() {
        let (mut sum, mut sq) = (p.clone(), p.clone().square());
        for &d in dims {
            sum = sum.sum_dim(d);
            sq = sq.sum_dim(d);
        }
        let both = Tensor::cat(vec![sum, sq], 0);
        let slot = &mut per_rank[layout.owner(c)];
        *slot = Some(match slot.take() { Some(acc) => acc + both, None => both });
    }
    let parts = per_rank.into_iter().map(|p| p.expect("every rank holds a clip")).collect();
    let totals = group.all_reduce(parts)?;
    // Σx and Σx² sit in the two halves of the leading axis.
    let lead = totals[0].dims()[0] / 2;
    Ok((0..layout.clips())
        .map(|c| {
            let total = totals[layout.owner(c)].clone();
            let mean = total.clone().narrow(0, 0, lead) / count as f64;
            let var = total.narrow(0, lead, lead) / count as f64 - mean.clone().square();
            (mean, var)
        })
        .collect())
}
