//! Writing what a person looks at: animated GIFs, PNG contact sheets and loss plots (the
//! GIF and PNG writers need the default `media` feature).

#[cfg(feature = "media")]
use std::path::Path;

#[cfg(feature = "media")]
use crate::train::write_atomically;

/// RGB frames of one video: `frames[t]` is `height × width × 3` bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Frames {
    /// Frame height.
    pub height: usize,
    /// Frame width.
    pub width: usize,
    /// One RGB byte buffer per frame.
    pub frames: Vec<Vec<u8>>,
}

impl Frames {
    /// From a channel-major `[3, T, H, W]` buffer in [-1, 1].
    pub fn from_chw(pixels: &[f32], frames: usize, height: usize, width: usize) -> Self {
        let plane = frames * height * width;
        assert_eq!(
            pixels.len(),
            3 * plane,
            "Frames::from_chw: expected 3·T·H·W values"
        );
        let to_byte = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
        let frames = (0..frames)
            .map(|t| {
                (0..height * width)
                    .flat_map(|i| (0..3).map(move |c| (c, i)))
                    .map(|(c, i)| to_byte(pixels[c * plane + t * height * width + i]))
                    .collect()
            })
            .collect();
        Self {
            height,
            width,
            frames,
        }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether there is no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Tiles equally sized videos side by side (`columns` per row) into one, with a 2-pixel
/// grey border; videos shorter than the longest hold their last frame.
pub fn tile(videos: &[Frames], columns: usize) -> Frames {
    assert!(
        !videos.is_empty() && columns > 0,
        "tile: need videos and ≥ 1 column"
    );
    let (h, w) = (videos[0].height, videos[0].width);
    let rows = videos.len().div_ceil(columns);
    let border = 2;
    let (th, tw) = (
        rows * (h + border) + border,
        columns * (w + border) + border,
    );
    let len = videos.iter().map(Frames::len).max().unwrap_or(0);
    let frames = (0..len)
        .map(|t| {
            let mut canvas = vec![96u8; th * tw * 3];
            for (i, video) in videos.iter().enumerate() {
                let frame = &video.frames[t.min(video.len() - 1)];
                let (oy, ox) = (
                    (i / columns) * (h + border) + border,
                    (i % columns) * (w + border) + border,
                );
                for y in 0..h {
                    let dst = ((oy + y) * tw + ox) * 3;
                    canvas[dst..dst + w * 3].copy_from_slice(&frame[y * w * 3..(y + 1) * w * 3]);
                }
            }
            canvas
        })
        .collect();
    Frames {
        height: th,
        width: tw,
        frames,
    }
}

/// Nearest-neighbour upscale by an integer factor (small clips are hard to see).
pub fn upscale(video: &Frames, factor: usize) -> Frames {
    let (h, w) = (video.height * factor, video.width * factor);
    let frames = video
        .frames
        .iter()
        .map(|f| {
            let mut out = vec![0u8; h * w * 3];
            for y in 0..h {
                for x in 0..w {
                    let src = ((y / factor) * video.width + x / factor) * 3;
                    out[(y * w + x) * 3..][..3].copy_from_slice(&f[src..src + 3]);
                }
            }
            out
        })
        .collect();
    Frames {
        height: h,
        width: w,
        frames,
    }
}

/// Writes an endlessly looping GIF at `fps`.
#[cfg(feature = "media")]
pub fn write_gif(path: &Path, video: &Frames, fps: u16) -> std::io::Result<()> {
    write_atomically(path, |file| {
        let mut encoder = gif::Encoder::new(file, video.width as u16, video.height as u16, &[])
            .map_err(std::io::Error::other)?;
        encoder
            .set_repeat(gif::Repeat::Infinite)
            .map_err(std::io::Error::other)?;
        for frame in &video.frames {
            let mut f =
                gif::Frame::from_rgb_speed(video.width as u16, video.height as u16, frame, 10);
            f.delay = (100 / fps.max(1)).max(1);
            encoder.write_frame(&f).map_err(std::io::Error::other)?;
        }
        encoder.into_inner().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// Writes an RGB image as PNG.
#[cfg(feature = "media")]
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> std::io::Result<()> {
    write_atomically(path, |file| {
        let mut encoder = png::Encoder::new(file, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(rgb)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

/// A contact sheet: one row per video, its frames left to right.
pub fn contact_sheet(videos: &[Frames]) -> (usize, usize, Vec<u8>) {
    let rows: Vec<Frames> = videos
        .iter()
        .map(|v| {
            let singles: Vec<Frames> = v
                .frames
                .iter()
                .map(|f| Frames {
                    height: v.height,
                    width: v.width,
                    frames: vec![f.clone()],
                })
                .collect();
            tile(&singles, singles.len())
        })
        .collect();
    let sheet = tile(&rows, 1);
    (sheet.width, sheet.height, sheet.frames[0].clone())
}

/// Draws one or more series (e.g. training loss) as lines on a white `width × height`
/// canvas, log-scaled on y when every value is positive.
pub fn plot_lines(series: &[(&[f32], [u8; 3])], width: usize, height: usize) -> Vec<u8> {
    let mut canvas = vec![255u8; width * height * 3];
    let all: Vec<f32> = series
        .iter()
        .flat_map(|(s, _)| s.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    if all.is_empty() {
        return canvas;
    }
    let log = all.iter().all(|&v| v > 0.0);
    let tf = |v: f32| if log { v.ln() } else { v };
    let (lo, hi) = all
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(tf(v)), b.max(tf(v)))
        });
    let span = (hi - lo).max(1e-6);
    let margin = 8;
    let (pw, ph) = (width - 2 * margin, height - 2 * margin);
    // Axes.
    for x in margin..width - margin {
        canvas[((height - margin) * width + x) * 3..][..3].copy_from_slice(&[0, 0, 0]);
    }
    for y in margin..height - margin {
        canvas[(y * width + margin) * 3..][..3].copy_from_slice(&[0, 0, 0]);
    }
    for (values, colour) in series {
        let n = values.len().max(2) - 1;
        let point = |i: usize| {
            let x = margin + i * pw / n;
            let y = margin + ((hi - tf(values[i])) / span * ph as f32) as usize;
            (x.min(width - 1), y.min(height - 1))
        };
        for i in 1..values.len() {
            let ((x0, y0), (x1, y1)) = (point(i - 1), point(i));
            let steps = x1.abs_diff(x0).max(y1.abs_diff(y0)).max(1);
            for s in 0..=steps {
                let x = x0 as f32 + (x1 as f32 - x0 as f32) * s as f32 / steps as f32;
                let y = y0 as f32 + (y1 as f32 - y0 as f32) * s as f32 / steps as f32;
                canvas[((y as usize) * width + x as usize) * 3..][..3].copy_from_slice(colour);
            }
        }
    }
    canvas
}
