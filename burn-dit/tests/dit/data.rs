use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn_dit::data::{
    BouncingShapes, COLOURS, COND_VOCAB, ClipBatcher, ClipSet, ClipShape, DataSource,
    FASHION_CLASSES, FASHION_DIR, FashionImages, MovingFashion, SHAPES, colour_token, inside,
    object_token, parse_label,
};
use burn_dit::media::Frames;
use burn_dit::metrics::{
    ObjectClassifier, classify_colour, detect, dynamic_degree, measure, motion_smoothness,
    shape_ious, temporal_flickering,
};

const CLIP: ClipShape = ClipShape {
    frames: 8,
    height: 32,
    width: 32,
};

#[test]
fn clips_are_deterministic_and_physical() {
    let set = BouncingShapes::new(CLIP, 50, 3);
    assert_eq!(set.get(7).unwrap(), set.get(7).unwrap());
    assert_ne!(
        set.get(7).unwrap().pixels,
        BouncingShapes::new(CLIP, 50, 4).get(7).unwrap().pixels
    );
    assert!(set.get(50).is_err(), "index past the end must be an error");
    for i in 0..50 {
        let clip = set.get(i).unwrap();
        assert!(clip.object < SHAPES.len() && clip.colour < COLOURS.len());
        assert_eq!(clip.trajectory.len(), CLIP.frames);
        for &(x, y) in &clip.trajectory {
            assert!(
                x >= clip.radius - 1e-4
                    && x <= 32.0 - clip.radius + 1e-4
                    && y >= clip.radius - 1e-4
                    && y <= 32.0 - clip.radius + 1e-4,
                "clip {i} leaves the frame"
            );
        }
        // Constant speed per axis: |Δx| is the same except where a bounce cut a step short.
        let dx: Vec<f32> = clip
            .trajectory
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).abs())
            .collect();
        let top = dx.iter().copied().fold(0.0f32, f32::max);
        let full = dx.iter().filter(|&&d| (d - top).abs() < 1e-3).count();
        assert!(full * 2 >= dx.len(), "clip {i} changes speed: {dx:?}");
    }
}

#[test]
fn batches_stack_pixels_and_labels() {
    let set = BouncingShapes::new(CLIP, 8, 1);
    let items: Vec<_> = (0..3).map(|i| set.get(i).unwrap()).collect();
    let batch = ClipBatcher::new(CLIP).batch(items.clone(), &Device::flex());
    assert_eq!(batch.videos.dims(), [3, 3, 8, 32, 32]);
    let labels: Vec<i64> = batch
        .labels
        .into_data()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    let expected: Vec<i64> = items
        .iter()
        .flat_map(|c| [object_token(c.object), colour_token(c.colour)])
        .collect();
    assert_eq!(labels, expected);
    assert!(
        labels.iter().all(|&l| l > 0 && (l as usize) < COND_VOCAB),
        "0 is reserved for the null token; ids stay in the vocabulary"
    );
    // Object and colour tokens never collide, whichever set the labels come from.
    let objects: Vec<i64> = (0..FASHION_CLASSES.len()).map(object_token).collect();
    assert!(
        (0..COLOURS.len())
            .map(colour_token)
            .all(|c| !objects.contains(&c))
    );
}

#[test]
fn metrics_recognise_real_clips() {
    let set = BouncingShapes::new(CLIP, 30, 9);
    let clips: Vec<_> = (0..30).map(|i| set.get(i).unwrap()).collect();
    let frames: Vec<Frames> = clips
        .iter()
        .map(|c| Frames::from_chw(&c.pixels, 8, 32, 32))
        .collect();
    let labels: Vec<(usize, usize)> = clips.iter().map(|c| (c.object, c.colour)).collect();
    let trajectories: Vec<Vec<(f32, f32)>> = clips.iter().map(|c| c.trajectory.clone()).collect();
    let classifier = ObjectClassifier::for_set(&ClipSet::Shapes(set), 0);
    assert_eq!(classifier, ObjectClassifier::ShapeFit);
    let m = measure(&frames, &labels, Some(&trajectories), &classifier);
    assert!(
        m.detection_rate > 1.0 - 1e-9
            && m.colour_accuracy > 1.0 - 1e-9
            && m.single_object_rate > 1.0 - 1e-9,
        "{m:?}"
    );
    assert!(
        m.object_accuracy > 1.0 - 1e-9,
        "shape classifier: {}",
        m.object_accuracy
    );
    assert_eq!(
        m.object_confusion
            .iter()
            .map(|row| row.iter().sum::<usize>())
            .sum::<usize>(),
        30
    );
    assert!(
        (0..3).all(|k| m.object_confusion[k][k] == m.object_confusion[k].iter().sum::<usize>()),
        "{:?}",
        m.object_confusion
    );
    // Each drawn shape fits its own class almost exactly and the others clearly worse.
    let (mut own, mut other) = (f64::MAX, 0.0f64);
    for (clip, video) in clips.iter().zip(&frames) {
        for frame in &video.frames {
            let ious = shape_ious(frame, 32);
            own = own.min(ious[clip.object]);
            other = other.max(
                (0..3)
                    .filter(|&k| k != clip.object)
                    .map(|k| ious[k])
                    .fold(0.0, f64::max),
            );
        }
    }
    eprintln!("shape IoU of real frames: own class ≥ {own:.3}, other classes ≤ {other:.3}");
    assert!(own > 0.95 && other < 0.9, "own {own}, other {other}");
    assert!(m.shape_iou.unwrap() > 0.95, "{m:?}");
    let by_class = &m.shape_iou_by_class;
    assert!(
        (0..3).all(|k| by_class[k][k] > 0.95 && (0..3).all(|j| j == k || by_class[k][j] < 0.9)),
        "{by_class:?}"
    );
    assert!(
        m.trajectory_error_px.unwrap() < 1.5,
        "detector error {:?}",
        m.trajectory_error_px
    );
    // A still video is perfectly steady and smooth; noise is not.
    let still = Frames {
        height: 4,
        width: 4,
        frames: vec![vec![50u8; 48]; 5],
    };
    assert!(
        (temporal_flickering(&still) - 1.0).abs() < 1e-12
            && (motion_smoothness(&still) - 1.0).abs() < 1e-12
            && dynamic_degree(&still) == 0.0
    );
    let noisy = Frames {
        height: 4,
        width: 4,
        frames: (0..5)
            .map(|t| (0..48).map(|i| ((i * 37 + t * 101) % 256) as u8).collect())
            .collect(),
    };
    assert!(temporal_flickering(&noisy) < 0.9 && dynamic_degree(&noisy) > 20.0);
    assert!(inside(0, 2.9, -2.9, 3.0) && !inside(1, 2.9, -2.9, 3.0));
}

#[test]
fn the_detector_takes_the_largest_region_and_counts_strays() {
    // A 6×6 red square at (4..10, 5..11), a 2×2 stray patch, and one lone lit pixel (below
    // the region minimum) on a 20×20 frame.
    let width = 20;
    let mut frame = vec![0u8; 3 * width * width];
    let mut light = |x: usize, y: usize| frame[3 * (y * width + x)] = 250;
    (4..10).for_each(|x| (5..11).for_each(|y| light(x, y)));
    (15..17).for_each(|x| (15..17).for_each(|y| light(x, y)));
    light(0, 19);
    let d = detect(&frame, width).expect("the square is found");
    assert_eq!((d.area, d.bbox, d.regions), (36.0, [4, 5, 9, 10], 2));
    assert!(
        (d.fill - 1.0).abs() < 1e-12
            && (d.centre.0 - 7.0).abs() < 1e-12
            && (d.centre.1 - 8.0).abs() < 1e-12,
        "{d:?}"
    );
    assert_eq!(classify_colour(d.colour), 0);
    // Diagonal neighbours join one region; nothing lit finds nothing.
    let mut diagonal = vec![0u8; 3 * width * width];
    for i in 0..4 {
        diagonal[3 * (i * width + i) + 1] = 200;
    }
    assert_eq!(
        detect(&diagonal, width).map(|d| (d.area, d.regions)),
        Some((4.0, 1))
    );
    assert_eq!(detect(&vec![0u8; 3 * width * width], width), None);
}

/// Writes a gzip-compressed IDX file of unsigned bytes.
fn write_idx(path: &Path, dims: &[u32], bytes: &[u8]) {
    let mut raw = vec![0u8, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| raw.extend(d.to_be_bytes()));
    raw.extend(bytes);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap();
}

/// A Fashion-MNIST-shaped folder: train images labelled 0–8 (a filled box whose width grows
/// with the label), test images all labelled 9.
fn fake_fashion(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dit-fashion-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = |label: usize| {
        (0..28 * 28usize)
            .map(|i| {
                if (i % 28).abs_diff(14) <= label + 1 && (4..24).contains(&(i / 28)) {
                    200
                } else {
                    0
                }
            })
            .collect::<Vec<u8>>()
    };
    for (prefix, labels) in [
        ("train", (0..27).map(|i| (i % 9) as u8).collect::<Vec<_>>()),
        ("t10k", vec![9u8; 5]),
    ] {
        let images: Vec<u8> = labels.iter().flat_map(|&l| image(l as usize)).collect();
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &[labels.len() as u32, 28, 28],
            &images,
        );
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &[labels.len() as u32],
            &labels,
        );
    }
    dir
}

#[test]
fn moving_fashion_reads_idx_files_and_bounces_garments() {
    let dir = fake_fashion("ok");
    let images = FashionImages::load(&dir).unwrap();
    assert_eq!(images.len(), (27, 5));
    let set = MovingFashion::new(images.clone(), CLIP, 40, 30, 5);
    assert_eq!(
        set.get(3).unwrap(),
        MovingFashion::new(images, CLIP, 40, 30, 5).get(3).unwrap(),
        "items depend only on (seed, index)"
    );
    assert!(set.get(40).is_err(), "index past the end must be an error");
    for i in 0..40 {
        let clip = set.get(i).unwrap();
        // Train items show train garments (labels 0–8), held-out ones the test garments (9).
        assert_eq!(
            clip.object == 9,
            i >= 30,
            "item {i} has label {}",
            clip.object
        );
        assert!(clip.colour < COLOURS.len() && (clip.radius - 8.0).abs() < 1e-6);
        assert!(clip.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
        // The garment is drawn where the trajectory says: the lit pixels' box centre is within
        // a pixel of it, in every frame.
        let frames = Frames::from_chw(&clip.pixels, 8, 32, 32);
        for (t, &(cx, cy)) in clip.trajectory.iter().enumerate() {
            assert!(
                (8.0 - 1e-4..=24.0 + 1e-4).contains(&cx)
                    && (8.0 - 1e-4..=24.0 + 1e-4).contains(&cy),
                "item {i} leaves the frame"
            );
            let lit: Vec<(usize, usize)> = (0..32 * 32)
                .filter(|p| frames.frames[t][3 * p..3 * p + 3].iter().any(|&b| b > 127))
                .map(|p| (p % 32, p / 32))
                .collect();
            let (x0, x1) = (
                lit.iter().map(|p| p.0).min().unwrap(),
                lit.iter().map(|p| p.0).max().unwrap(),
            );
            assert!(
                ((x0 + x1 + 1) as f32 / 2.0 - cx).abs() <= 1.0,
                "item {i} frame {t}: garment box {x0}..={x1}, centre {cx}"
            );
        }
    }
    // Through the data source too, with the class names of the set.
    let source = DataSource::MovingFashion { dir: dir.clone() };
    assert_eq!(source.classes().len(), 10);
    assert_eq!(
        source.open(CLIP, 10, 10, 5).unwrap().generate(4),
        set.generate(4)
    );
    // The template classifier tells the garments of the fake set apart on real clips.
    let opened = source.open(CLIP, 200, 200, 5).unwrap();
    let classifier = ObjectClassifier::for_set(&opened, 200);
    let clips: Vec<_> = (0..40).map(|i| opened.generate(i)).collect();
    let frames: Vec<Frames> = clips
        .iter()
        .map(|c| Frames::from_chw(&c.pixels, 8, 32, 32))
        .collect();
    let labels: Vec<(usize, usize)> = clips.iter().map(|c| (c.object, c.colour)).collect();
    let m = measure(&frames, &labels, None, &classifier);
    assert!(
        m.object_accuracy >= 0.6 && m.colour_accuracy > 0.99,
        "{m:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_fashion_files_fail_naming_the_file() {
    let message = |dir: &Path| FashionImages::load(dir).unwrap_err().to_string();
    let missing = std::env::temp_dir().join("dit-fashion-nowhere");
    let m = message(&missing);
    assert!(
        m.contains("train-images-idx3-ubyte.gz") && m.contains("dataset-fashion-mnist"),
        "{m}"
    );
    let dir = fake_fashion("bad");
    let labels = dir.join("t10k-labels-idx1-ubyte.gz");
    // Wrong magic (an image file where labels belong).
    write_idx(&labels, &[5, 28, 28], &vec![0; 5 * 28 * 28]);
    let m = message(&dir);
    assert!(
        m.contains("t10k-labels-idx1-ubyte.gz") && m.contains("1 dimension"),
        "{m}"
    );
    // Fewer bytes than the dimensions promise.
    write_idx(&labels, &[6], &[9; 5]);
    assert!(message(&dir).contains("need 14 bytes"), "{}", message(&dir));
    // Dimensions whose product overflows: refused, no arithmetic panic.
    let images = dir.join("t10k-images-idx3-ubyte.gz");
    let good_images = std::fs::read(&images).unwrap();
    write_idx(&images, &[u32::MAX; 3], &[0; 16]);
    let m = message(&dir);
    assert!(
        m.contains("t10k-images-idx3-ubyte.gz") && m.contains("more than"),
        "{m}"
    );
    std::fs::write(&images, good_images).unwrap();
    // Labels out of range.
    write_idx(&labels, &[5], &[9, 9, 12, 9, 9]);
    assert!(message(&dir).contains("must be < 10"), "{}", message(&dir));
    // Not gzip at all.
    std::fs::write(&labels, b"hello").unwrap();
    assert!(
        message(&dir).contains("not a gzip file"),
        "{}",
        message(&dir)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Debian's real files (`scripts/setup.sh --fashion` installs them; the README's test command
/// runs it). Missing files fail the test, naming the fix; `DIT_SKIP_FASHION=1` skips it on
/// purpose.
#[test]
fn real_fashion_mnist() {
    if std::env::var_os("DIT_SKIP_FASHION").is_some() {
        eprintln!("skipped: DIT_SKIP_FASHION is set");
        return;
    }
    let images = FashionImages::load(FASHION_DIR).unwrap_or_else(|e| {
        panic!("{e}: run scripts/setup.sh --fashion (apt install dataset-fashion-mnist), or set DIT_SKIP_FASHION=1")
    });
    assert_eq!(images.len(), (60000, 10000));
    let set = ClipSet::Fashion(MovingFashion::new(images, CLIP, 1000, 1000, 1));
    let classifier = ObjectClassifier::for_set(&set, 1000);
    let clips: Vec<_> = (1000..1100).map(|i| set.generate(i)).collect();
    let frames: Vec<Frames> = clips
        .iter()
        .map(|c| Frames::from_chw(&c.pixels, 8, 32, 32))
        .collect();
    let labels: Vec<(usize, usize)> = clips.iter().map(|c| (c.object, c.colour)).collect();
    let m = measure(&frames, &labels, None, &classifier);
    // Ten classes: chance is 0.1; class-mean templates on held-out garments do far better.
    eprintln!(
        "moving Fashion-MNIST, 100 held-out real clips: template class accuracy {:.2}",
        m.object_accuracy
    );
    assert!(m.object_accuracy > 0.4, "{m:?}");
    assert!(m.colour_accuracy > 0.9, "{m:?}");
}

#[test]
fn labels_parse_against_the_set_and_name_what_is_wrong() {
    assert_eq!(parse_label("circle:red", &SHAPES), Ok((1, 0)));
    assert_eq!(parse_label(" bag : cyan", &FASHION_CLASSES), Ok((8, 4)));
    assert!(
        parse_label("circle", &SHAPES)
            .unwrap_err()
            .contains("expected object:colour")
    );
    let e = parse_label("bag:red", &SHAPES).unwrap_err();
    assert!(
        e.contains("unknown object `bag`") && e.contains("square"),
        "{e}"
    );
    let e = parse_label("circle:pink", &SHAPES).unwrap_err();
    assert!(
        e.contains("unknown colour `pink`") && e.contains("magenta"),
        "{e}"
    );
}
