//! Finding the object in a frame and recognising its shape and colour.

use crate::data::{COLOURS, SHAPES, inside};

/// What the detector finds of the object in one frame: the largest lit region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// Centroid `(x, y)` in pixels.
    pub centre: (f64, f64),
    /// Foreground pixels.
    pub area: f64,
    /// Area over bounding-box area: 1 square, π/4 circle, 1/2 triangle.
    pub fill: f64,
    /// Mean foreground colour in [0, 1].
    pub colour: [f64; 3],
    /// Bounding box of the foreground, `[x0, y0, x1, y1]` inclusive.
    pub bbox: [usize; 4],
    /// Lit regions of at least [`MIN_REGION`] pixels in the frame: 1 for a clip of one object;
    /// a sample that grew its object in several places shows more.
    pub regions: usize,
}

/// Smallest lit region (8-connected pixels) the detector counts as an object.
pub const MIN_REGION: usize = 3;

/// The largest 8-connected region of lit pixels of `frame` (pixel indices; empty when no
/// region reaches [`MIN_REGION`] pixels) and how many regions reach [`MIN_REGION`].
fn largest_region(frame: &[u8], width: usize) -> (Vec<usize>, usize) {
    let pixels = frame.len() / 3;
    // Lit pixels not yet assigned to a region: a flood fill clears them as it goes.
    let mut unvisited: Vec<bool> = frame
        .chunks_exact(3)
        .map(|px| *px.iter().max().unwrap() >= 128)
        .collect();
    let (mut regions, mut best): (usize, Vec<usize>) = (0, Vec::new());
    let mut stack = Vec::new();
    for seed in 0..pixels {
        if !unvisited[seed] {
            continue;
        }
        let mut members = vec![seed];
        unvisited[seed] = false;
        stack.push(seed);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            for (dx, dy) in [
                (-1, -1),
                (0, -1),
                (1, -1),
                (-1, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= width as isize || ny as usize * width >= pixels {
                    continue;
                }
                let j = ny as usize * width + nx as usize;
                if unvisited[j] {
                    unvisited[j] = false;
                    members.push(j);
                    stack.push(j);
                }
            }
        }
        if members.len() >= MIN_REGION {
            regions += 1;
            if members.len() > best.len() {
                best = members;
            }
        }
    }
    (best, regions)
}

/// Finds the bright object on the dark background of a frame: the largest 8-connected region
/// of lit pixels (`None` if no region reaches [`MIN_REGION`] pixels). Stray lit patches
/// elsewhere do not move its centre or spoil its shape; they are counted in `regions`.
pub fn detect(frame: &[u8], width: usize) -> Option<Detection> {
    let (best, regions) = largest_region(frame, width);
    if best.is_empty() {
        return None;
    }
    let n = best.len() as f64;
    let (mut sx, mut sy, mut rgb) = (0.0, 0.0, [0.0f64; 3]);
    let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
    for &i in &best {
        let (x, y) = (i % width, i / width);
        sx += x as f64 + 0.5;
        sy += y as f64 + 0.5;
        for c in 0..3 {
            rgb[c] += frame[3 * i + c] as f64 / 255.0;
        }
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let bbox = ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
    Some(Detection {
        centre: (sx / n, sy / n),
        area: n,
        fill: n / bbox,
        colour: rgb.map(|c| c / n),
        bbox: [x0, y0, x1, y1],
        regions,
    })
}

/// Intersection over union of the largest lit region of `frame` with each shape of
/// [`SHAPES`] drawn as the data set draws it ([`inside`]) and fitted to the region: the same
/// area, centred on its centroid (a triangle's box sits a third of its half-size above it),
/// then the best of shifts up to a pixel and sizes ±10%, so that a ragged edge pixel does not
/// decide. A clean shape scores near 1 with its own class; a square drawn as a blob scores
/// low with the square. All zeros when nothing is detected.
pub fn shape_ious(frame: &[u8], width: usize) -> [f64; 3] {
    let (region, _) = largest_region(frame, width);
    if region.is_empty() {
        return [0.0; 3];
    }
    let height = frame.len() / 3 / width;
    let mut lit = vec![false; width * height];
    let (mut cx, mut cy) = (0.0, 0.0);
    for &i in &region {
        lit[i] = true;
        cx += (i % width) as f64 + 0.5;
        cy += (i / width) as f64 + 0.5;
    }
    let n = region.len() as f64;
    let (cx, cy) = (cx / n, cy / n);
    // Half-size giving area n: 4r² (square), πr² (circle), 2r² (triangle).
    let half_size = [
        (n / 4.0).sqrt(),
        (n / std::f64::consts::PI).sqrt(),
        (n / 2.0).sqrt(),
    ];
    let iou = |shape: usize, bx: f64, by: f64, r: f64| {
        let (mut inter, mut drawn) = (0.0, 0.0);
        let (xs, ys) = (
            ((bx - r - 1.0).max(0.0) as usize)..((bx + r + 1.0).min(width as f64) as usize),
            ((by - r - 1.0).max(0.0) as usize)..((by + r + 1.0).min(height as f64) as usize),
        );
        for y in ys {
            for x in xs.clone() {
                if inside(
                    shape,
                    (x as f64 + 0.5 - bx) as f32,
                    (y as f64 + 0.5 - by) as f32,
                    r as f32,
                ) {
                    drawn += 1.0;
                    inter += lit[y * width + x] as u8 as f64;
                }
            }
        }
        inter / (n + drawn - inter)
    };
    let offsets = [-1.0, -0.5, 0.0, 0.5, 1.0];
    std::array::from_fn(|shape| {
        let mut best = 0.0f64;
        for scale in [0.9, 1.0, 1.1] {
            let r = half_size[shape] * scale;
            let lift = if shape == 2 { r / 3.0 } else { 0.0 };
            for dy in offsets {
                for dx in offsets {
                    best = best.max(iou(shape, cx + dx, cy + dy - lift, r));
                }
            }
        }
        best
    })
}

/// The shape a frame's object fits best ([`shape_ious`]).
pub fn classify_shape(frame: &[u8], width: usize) -> usize {
    best_fit(&shape_ious(frame, width))
}

/// The shape with the highest IoU.
pub(super) fn best_fit(ious: &[f64; 3]) -> usize {
    (0..SHAPES.len())
        .max_by(|&a, &b| ious[a].total_cmp(&ious[b]))
        .unwrap()
}

/// The palette colour nearest to an RGB value, compared at full brightness (a dim garment
/// or a faded sample keeps its hue).
pub fn classify_colour(rgb: [f64; 3]) -> usize {
    let peak = rgb.iter().copied().fold(1e-6, f64::max);
    let dist = |c: [f32; 3]| {
        (0..3)
            .map(|i| (rgb[i] / peak - c[i] as f64).powi(2))
            .sum::<f64>()
    };
    (0..COLOURS.len())
        .min_by(|&a, &b| dist(COLOURS[a].1).total_cmp(&dist(COLOURS[b].1)))
        .unwrap()
}
