//! Video ↔ tokens: non-overlapping 3D patches, frame-major token order.

use burn::tensor::Tensor;

/// `[B, C, T, H, W]` → `[B, N, C·pt·ph·pw]` with tokens frame-major over the patch grid.
pub fn patchify(video: Tensor<5>, [pt, ph, pw]: [usize; 3]) -> Tensor<3> {
    let [b, c, t, h, w] = video.dims();
    let (gt, gh, gw) = (t / pt, h / ph, w / pw);
    video
        .reshape([b, c, gt, pt, gh, ph, gw, pw])
        .permute([0, 2, 4, 6, 1, 3, 5, 7])
        .reshape([b, gt * gh * gw, c * pt * ph * pw])
}

/// Inverse of [`patchify`]: `[B, N, C·pt·ph·pw]` → `[B, C, T, H, W]` for a `grid` of patches.
pub fn unpatchify(
    tokens: Tensor<3>,
    channels: usize,
    [pt, ph, pw]: [usize; 3],
    [gt, gh, gw]: [usize; 3],
) -> Tensor<5> {
    let b = tokens.dims()[0];
    tokens
        .reshape([b, gt, gh, gw, channels, pt, ph, pw])
        .permute([0, 4, 1, 5, 2, 6, 3, 7])
        .reshape([b, channels, gt * pt, gh * ph, gw * pw])
}
