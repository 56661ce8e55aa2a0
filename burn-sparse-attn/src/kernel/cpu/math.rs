//! Small dense building blocks: a safe front for `gemm` and a vectorisable `exp`.

use gemm::Parallelism;

/// A row-major or transposed view of a matrix in a slice.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// `rows × cols`, row-major and contiguous.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `cols × rows` matrix.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows,
        }
    }

    fn last_index(&self) -> usize {
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// `dst[m × n] (row-major) = (accumulate ? dst : 0) + alpha · a[m × k] · b[k × n]`.
pub(crate) fn matmul(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, alpha: f32, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert!(dst.len() >= m * n, "matmul: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "matmul: operand out of bounds"
    );
    // SAFETY: every index the product touches was bounds-checked above; `dst` does not
    // alias `a` or `b` (it is borrowed mutably while they are shared).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            // The callers are already parallel over groups.
            Parallelism::None,
        );
    }
}

/// `e^x` for `x ≤ 0` to ~2 ulp, written so the compiler vectorises it (no libm call); NaN
/// for NaN.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round-to-nearest by the 1.5·2²³ trick: float adds and bit casts only, so it vectorises
    // (`as i32` would not: Rust's saturating conversion compiles to scalar compares).
    const ROUNDER: f32 = 12_582_912.0;
    // Not `x.max(-87.0)`, which turns NaN into -87: a NaN score must stay NaN, so that a NaN
    // input shows in the rows it reaches instead of vanishing.
    let x = if x < -87.0 { -87.0 } else { x };
    let rounded = x * LOG2E + ROUNDER;
    // n = round(x·log2(e)) ∈ [-126, 0], exact.
    let n = rounded - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Minimax polynomial for e^r on [-ln2/2, ln2/2] (Cephes expf).
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let p = p * r * r + r + 1.0;
    // The low mantissa bits of `rounded` hold n: 2ⁿ is (n + 127) shifted into the exponent.
    let scale = f32::from_bits(
        rounded
            .to_bits()
            .wrapping_sub(ROUNDER.to_bits())
            .wrapping_add(127)
            << 23,
    );
    p * scale
}

/// `row[i] = e^(alpha·row[i] − shift)`; returns the sum. Requires `alpha·row[i] ≤ shift`.
#[inline(always)]
fn exp_shifted_generic(row: &mut [f32], alpha: f32, shift: f32) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for chunk in &mut chunks {
        for (x, s) in chunk.iter_mut().zip(&mut sums) {
            *x = exp_nonpositive(*x * alpha - shift);
            *s += *x;
        }
    }
    let mut total: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_nonpositive(*x * alpha - shift);
        total += *x;
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(row: &mut [f32], alpha: f32, shift: f32) -> f32 {
    exp_shifted_generic(row, alpha, shift)
}

/// `row[i] = e^(alpha·row[i] − shift)`, vectorised for the running CPU; returns the sum.
pub(crate) fn exp_shifted(row: &mut [f32], alpha: f32, shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { exp_shifted_avx2(row, alpha, shift) };
    }
    exp_shifted_generic(row, alpha, shift)
}

/// Largest element, NaN ignored (`-inf` for an empty row): a NaN element then gives NaN in
/// `exp_shifted` on its own.
pub(crate) fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (x, m) in chunk.iter().zip(&mut lanes) {
            *m = m.max(*x);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f32;
        for i in 0..=100_000 {
            let x = -87.0 * i as f32 / 100_000.0;
            let got = exp_nonpositive(x);
            let want = x.exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        let mut row = vec![-1.0f32, -2.0, 0.0, -0.5, -3.0, -10.0, -0.25, -4.0, -1.5];
        let sum = exp_shifted(&mut row, 2.0, 1.0);
        let want: Vec<f32> = [-1.0f32, -2.0, 0.0, -0.5, -3.0, -10.0, -0.25, -4.0, -1.5]
            .iter()
            .map(|x| (2.0 * x - 1.0).exp())
            .collect();
        for (g, w) in row.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.max(1e-30), "{g} vs {w}");
        }
        assert!((sum - want.iter().sum::<f32>()).abs() < 1e-5);
    }

    #[test]
    fn matmul_handles_transposed_operands() {
        // a: 2×3, b = cᵀ with c: 2×3 → a·cᵀ: 2×2.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let c = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut dst = [9.0f32; 4];
        matmul(
            &mut dst,
            Mat::rows(&a, 2, 3),
            Mat::transposed(&c, 3, 2),
            2.0,
            false,
        );
        assert_eq!(dst, [8.0, 4.0, 20.0, 10.0]);
        matmul(
            &mut dst,
            Mat::rows(&a, 2, 3),
            Mat::transposed(&c, 3, 2),
            1.0,
            true,
        );
        assert_eq!(dst, [12.0, 6.0, 30.0, 15.0]);
    }
}
