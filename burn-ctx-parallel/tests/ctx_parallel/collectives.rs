use burn::tensor::{Device, Distribution, Tensor};
use burn_ctx_parallel::{ClipLayout, DeviceGroup, clip_halos};

fn same(a: Tensor<2>, b: Tensor<2>) -> bool {
    (a - b).abs().max().into_scalar::<f32>() == 0.0
}

#[test]
fn all_reduce_of_a_device_group_sums_every_rank() {
    let device = Device::flex();
    let group = DeviceGroup::virtual_ranks(&device, 3).unwrap();
    let parts: Vec<Tensor<2>> = (0..3).map(|_| Tensor::random([4, 5], Distribution::Normal(0.0, 1.0), &device)).collect();
    let sum = parts.iter().cloned().reduce(|a, b| a + b).unwrap();
    let out = group.all_reduce(parts).unwrap();
    assert!(out.into_iter().all(|x| (x - sum.clone()).abs().max().into_scalar::<f32>() < 1e-6));
    // Two to rank 0, two back: 4 messages of 4×5 f32.
    assert_eq!(group.stats().bytes, 4 * 4 * 5 * 4);
    assert_eq!(group.all_reduce(vec![Tensor::<2>::zeros([1, 1], &device)]).unwrap_err().argument, "parts");
}

#[test]
fn clip_halos_bring_each_clip_its_neighbours_edges() {
    let device = Device::flex();
    // Five clips of unequal length over two ranks: clips 0–2 on rank 0, 3–4 on rank 1.
    let group = DeviceGroup::virtual_ranks(&device, 2).unwrap();
    let layout = ClipLayout::new(vec![3, 2, 4, 2, 3], 2).unwrap();
    let x: Vec<Tensor<2>> = (0..5).map(|c| Tensor::random([layout.frames(c), 4], Distribution::Normal(0.0, 1.0), &device)).collect();
    group.reset_stats();
    let halos = clip_halos(&group, &layout, &x, 0, 2).unwrap();
    assert_eq!(halos.len(), 5);
    for (c, (before, after)) in halos.into_iter().enumerate() {
        assert_eq!((before.is_some(), after.is_some()), (c > 0, c < 4), "clip {c}");
        if let Some(b) = before {
            assert!(same(b, x[c - 1].clone().narrow(0, layout.frames(c - 1) - 2, 2)), "clip {c} before");
        }
        if let Some(a) = after {
            assert!(same(a, x[c + 1].clone().narrow(0, 0, 2)), "clip {c} after");
        }
    }
    // Only the boundary between clips 2 and 3 crosses ranks: two halos of 2×4 f32.
    assert_eq!(group.stats().bytes, 2 * 2 * 4 * 4);
    assert!(clip_halos(&group, &layout, &x, 0, 0).unwrap().iter().all(|(b, a)| b.is_none() && a.is_none()));
    assert_eq!(clip_halos(&group, &layout, &x, 0, 3).unwrap_err().argument, "halo");
    assert_eq!(clip_halos(&group, &layout, &x[..4], 0, 1).unwrap_err().argument, "parts");
}
