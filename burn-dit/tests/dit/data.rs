use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use burn_dit::data::{BouncingShapes, COLOURS, ClipBatcher, ClipShape, SHAPES, colour_token, inside, shape_token};
use burn_dit::media::Frames;
use burn_dit::metrics::{dynamic_degree, measure, motion_smoothness, temporal_flickering};

const CLIP: ClipShape = ClipShape { frames: 8, height: 32, width: 32 };

#[test]
fn clips_are_deterministic_and_physical() {
    let set = BouncingShapes::new(CLIP, 50, 3);
    assert_eq!(set.get(7).unwrap(), set.get(7).unwrap());
    assert_ne!(set.get(7).unwrap().pixels, BouncingShapes::new(CLIP, 50, 4).get(7).unwrap().pixels);
    assert!(set.get(50).is_err(), "index past the end must be an error");
    for i in 0..50 {
        let clip = set.get(i).unwrap();
        assert!(clip.shape < SHAPES.len() && clip.colour < COLOURS.len());
        assert_eq!(clip.trajectory.len(), CLIP.frames);
        for &(x, y) in &clip.trajectory {
            assert!(x >= clip.radius - 1e-4 && x <= 32.0 - clip.radius + 1e-4 && y >= clip.radius - 1e-4 && y <= 32.0 - clip.radius + 1e-4, "clip {i} leaves the frame");
        }
        // Constant speed per axis: |Δx| is the same except where a bounce cut a step short.
        let dx: Vec<f32> = clip.trajectory.windows(2).map(|w| (w[1].0 - w[0].0).abs()).collect();
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
    let labels: Vec<i64> = batch.labels.into_data().convert::<i64>().try_to_vec().unwrap();
    let expected: Vec<i64> = items.iter().flat_map(|c| [shape_token(c.shape), colour_token(c.colour)]).collect();
    assert_eq!(labels, expected);
    assert!(labels.iter().all(|&l| l > 0), "0 is reserved for the null token");
}

#[test]
fn metrics_recognise_real_clips() {
    let set = BouncingShapes::new(CLIP, 30, 9);
    let clips: Vec<_> = (0..30).map(|i| set.get(i).unwrap()).collect();
    let frames: Vec<Frames> = clips.iter().map(|c| Frames::from_chw(&c.pixels, 8, 32, 32)).collect();
    let labels: Vec<(usize, usize)> = clips.iter().map(|c| (c.shape, c.colour)).collect();
    let trajectories: Vec<Vec<(f32, f32)>> = clips.iter().map(|c| c.trajectory.clone()).collect();
    let m = measure(&frames, &labels, Some(&trajectories));
    assert!(m.detection_rate > 1.0 - 1e-9 && m.colour_accuracy > 1.0 - 1e-9, "{m:?}");
    assert!(m.shape_accuracy >= 0.9, "shape classifier: {}", m.shape_accuracy);
    assert!(m.trajectory_error_px.unwrap() < 1.5, "detector error {:?}", m.trajectory_error_px);
    // A still video is perfectly steady and smooth; noise is not.
    let still = Frames { height: 4, width: 4, frames: vec![vec![50u8; 48]; 5] };
    assert!((temporal_flickering(&still) - 1.0).abs() < 1e-12 && (motion_smoothness(&still) - 1.0).abs() < 1e-12 && dynamic_degree(&still) == 0.0);
    let noisy = Frames { height: 4, width: 4, frames: (0..5).map(|t| (0..48).map(|i| ((i * 37 + t * 101) % 256) as u8).collect()).collect() };
    assert!(temporal_flickering(&noisy) < 0.9 && dynamic_degree(&noisy) > 20.0);
    assert!(inside(0, 2.9, -2.9, 3.0) && !inside(1, 2.9, -2.9, 3.0));
}
