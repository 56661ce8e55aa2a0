//! Clip parallelism: a long video cut along time into clips, each held by one rank, and the
//! frame-spanning statistics those clips must share.

use std::ops::Range;

use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use crate::CommError;
use crate::{Communicator, Halo};

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
    pub fn new(clip_frames: Vec<usize>, world: usize) -> Result<Self, CommError> {
        const F: &str = "ClipLayout::new";
        SparseAttnError::check(world >= 1, F, "world", "≥ 1", world)?;
        SparseAttnError::check(
            clip_frames.len() >= world,
            F,
            "clip_frames",
            format!("at least one clip per rank ({world})"),
            clip_frames.len(),
        )?;
        SparseAttnError::check(
            clip_frames.iter().all(|&f| f > 0),
            F,
            "clip_frames",
            "every clip ≥ 1 frame",
            format!("{clip_frames:?}"),
        )?;
        let n = clip_frames.len();
        let offsets = clip_frames
            .iter()
            .scan(0, |acc, &f| {
                let o = *acc;
                *acc += f;
                Some(o)
            })
            .collect();
        let owners = (0..n).map(|c| c * world / n).collect();
        Ok(Self {
            frames: clip_frames,
            offsets,
            owners,
            world,
        })
    }

    /// `clips` clips of `frames_per_clip` frames each over `world` ranks.
    pub fn uniform(clips: usize, frames_per_clip: usize, world: usize) -> Result<Self, CommError> {
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

    /// The clips rank `rank` holds (a contiguous range, never empty for a rank of the layout).
    pub fn clips_of(&self, rank: usize) -> Range<usize> {
        let start = self.owners.partition_point(|&o| o < rank);
        start..self.owners.partition_point(|&o| o <= rank)
    }

    /// The clips `comm`'s rank holds, or an error from `function` naming `layout` when this
    /// layout is not over `comm`'s ranks.
    pub fn clips_of_rank(
        &self,
        function: &'static str,
        comm: &Communicator,
    ) -> Result<Range<usize>, CommError> {
        SparseAttnError::check(
            self.world == comm.world(),
            function,
            "layout",
            format!("a layout over the group's {} ranks", comm.world()),
            self.world,
        )?;
        Ok(self.clips_of(comm.rank()))
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
        Self::new(self.frames.iter().map(|f| f * factor).collect(), self.world)
            .expect("scaling keeps a valid layout")
    }
}

/// Checks that `parts` are this rank's clips of `layout` in a group of `comm.world()`.
pub(crate) fn check_local_clips<T>(
    function: &'static str,
    comm: &Communicator,
    layout: &ClipLayout,
    parts: &[T],
) -> Result<Range<usize>, CommError> {
    let mine = layout.clips_of_rank(function, comm)?;
    SparseAttnError::check(
        parts.len() == mine.len(),
        function,
        "parts",
        format!(
            "one tensor per clip of rank {} ({}: clips {mine:?})",
            comm.rank(),
            mine.len()
        ),
        parts.len(),
    )?;
    Ok(mine)
}

/// The slices each of this rank's clips needs from its neighbours along `dim` for anything
/// that looks `halo` slices past its edges (a temporal convolution, a local attention
/// window): the last `halo` slices of the clip before and the first `halo` of the clip
/// after. `parts` are this rank's clips ([`ClipLayout::clips_of`]); neighbours on other ranks
/// arrive in one halo exchange, those on this rank are sliced locally. `None` at the video's
/// two ends and where `halo` is 0. Every rank of `comm` calls it.
pub fn clip_halos<const D: usize>(
    comm: &Communicator,
    layout: &ClipLayout,
    parts: &[Tensor<D>],
    dim: usize,
    halo: usize,
) -> Result<Vec<Halo<D>>, CommError> {
    const F: &str = "clip_halos";
    let mine = check_local_clips(F, comm, layout, parts)?;
    SparseAttnError::check(dim < D, F, "dim", format!("< {D}"), dim)?;
    let shortest = parts.iter().map(|p| p.dims()[dim]).min().unwrap_or(0);
    SparseAttnError::check(
        layout.clips() < 2 || halo <= shortest,
        F,
        "halo",
        format!("≤ the shortest clip's size along dim {dim} ({shortest})"),
        halo,
    )?;
    if halo == 0 || layout.clips() < 2 {
        return Ok(vec![(None, None); parts.len()]);
    }
    let len = |i: usize| parts[i].dims()[dim];
    let head = |i: usize| parts[i].clone().narrow(dim, 0, halo);
    let tail = |i: usize| parts[i].clone().narrow(dim, len(i) - halo, halo);
    // One exchange: the first clip's head goes left and the last clip's tail right, so send
    // them as one tensor whose first and last `halo` slices they are.
    let last = parts.len() - 1;
    let (mut left, mut right) =
        comm.halo_exchange(Tensor::cat(vec![head(0), tail(last)], dim), dim, halo)?;
    Ok((0..parts.len())
        .map(|i| {
            let c = mine.start + i;
            let before = match (c > 0, i > 0) {
                (true, true) => Some(tail(i - 1)),
                (true, false) => left.take(),
                (false, _) => None,
            };
            let after = match (c + 1 < layout.clips(), i < last) {
                (true, true) => Some(head(i + 1)),
                (true, false) => right.take(),
                (false, _) => None,
            };
            (before, after)
        })
        .collect())
}

/// Mean and variance over `dims` of a tensor split along one of them across clips, computed
/// with one all-reduce of `[Σx, Σx²]` and of the element count, so every clip normalises with
/// the statistics of the whole video — what a GroupNorm or any other frame-spanning norm
/// needs under clip parallelism. `parts` are this rank's clips; returns `(mean, var)` with
/// the reduced dims kept at size 1, the same on every rank.
pub fn synced_moments<const D: usize>(
    comm: &Communicator,
    layout: &ClipLayout,
    parts: Vec<Tensor<D>>,
    dims: &[usize],
) -> Result<(Tensor<D>, Tensor<D>), CommError> {
    const F: &str = "synced_moments";
    check_local_clips(F, comm, layout, &parts)?;
    SparseAttnError::check(
        !dims.is_empty() && dims.iter().all(|&d| d < D),
        F,
        "dims",
        format!("1 to {D} dims below {D}"),
        format!("{dims:?}"),
    )?;
    let local_count: usize = parts
        .iter()
        .map(|p| dims.iter().map(|&d| p.dims()[d]).product::<usize>())
        .sum();
    let count: usize = comm.gather_sizes(local_count)?.iter().sum();
    // This rank's sums and sums of squares stacked on a new leading axis.
    let both = parts
        .into_iter()
        .map(|p| {
            let (mut sum, mut sq) = (p.clone(), p.square());
            for &d in dims {
                sum = sum.sum_dim(d);
                sq = sq.sum_dim(d);
            }
            Tensor::cat(vec![sum, sq], 0)
        })
        .reduce(|a, b| a + b)
        .expect("every rank holds a clip");
    let total = comm.all_reduce(both)?;
    // Σx and Σx² sit in the two halves of the leading axis.
    let lead = total.dims()[0] / 2;
    let mean = total.clone().narrow(0, 0, lead) / count as f64;
    let var = total.narrow(0, lead, lead) / count as f64 - mean.clone().square();
    Ok((mean, var))
}
