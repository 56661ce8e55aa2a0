use burn::tensor::{Device, Distribution, Tensor};
use burn_ctx_parallel::{ClipLayout, DeviceGroup, clip_halos};

fn parts(world: usize, shape: [usize; 2], device: &Device) -> Vec<Tensor<2>> {
    (0..world).map(|_| Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)).collect()
}

fn same(a: Tensor<2>, b: Tensor<2>) -> bool {
    (a - b).abs().max().into_scalar::<f32>() == 0.0
}

#[test]
fn collectives_compute_the_right_values_and_count_bytes() {
    let device = Device::flex();
    for world in [1usize, 2, 3, 4] {
        let group = DeviceGroup::virtual_ranks(&device, world).unwrap();
        let x = parts(world, [6, 4], &device);
        let elem = 4u64; // f32

        let gathered = group.all_gather(x.clone(), 0).unwrap();
        let full = Tensor::cat(x.clone(), 0);
        assert!(gathered.iter().all(|g| same(g.clone(), full.clone())));
        let w = world as u64;
        assert_eq!(group.stats().bytes, w * (w - 1) * 24 * elem, "all-gather of {world}");
        group.reset_stats();

        let total = x.iter().cloned().reduce(|a, b| a + b).unwrap();
        let reduced = group.all_reduce(x.clone()).unwrap();
        assert!(reduced.iter().all(|r| (r.clone() - total.clone()).abs().max().into_scalar::<f32>() < 1e-5));
        group.reset_stats();

        // Uneven all-to-all: rank j gets rows [offset_j, offset_j + size_j) of every rank.
        let sizes: Vec<usize> = (0..world).map(|j| if j == 0 { 6 - (world - 1) } else { 1 }).collect();
        let out = group.all_to_all(x.clone(), 0, &sizes, 1).unwrap();
        let mut offset = 0;
        for (j, o) in out.iter().enumerate() {
            let expected = Tensor::cat(x.iter().map(|p| p.clone().narrow(0, offset, sizes[j])).collect(), 1);
            assert!(same(o.clone(), expected), "all-to-all piece {j} of {world}");
            offset += sizes[j];
        }
        let sent: u64 = (0..world).map(|j| (world as u64 - 1) * sizes[j] as u64 * 4 * elem).sum();
        assert_eq!(group.stats().bytes, sent);
        assert!(group.all_to_all(x.clone(), 0, &vec![1; world + 1], 1).is_err());

        if 6 % world == 0 {
            let scattered = group.reduce_scatter(x.clone(), 0).unwrap();
            let chunk = 6 / world;
            for (r, s) in scattered.iter().enumerate() {
                assert!((s.clone() - total.clone().narrow(0, r * chunk, chunk)).abs().max().into_scalar::<f32>() < 1e-5);
            }
        }

        group.reset_stats();
        let halos = group.halo_exchange(&x, 0, 2).unwrap();
        for (r, (before, after)) in halos.into_iter().enumerate() {
            assert_eq!(before.is_some(), r > 0);
            assert_eq!(after.is_some(), r + 1 < world);
            if let Some(b) = before {
                assert!(same(b, x[r - 1].clone().narrow(0, 4, 2)));
            }
            if let Some(a) = after {
                assert!(same(a, x[r + 1].clone().narrow(0, 0, 2)));
            }
        }
        assert_eq!(group.stats().bytes, 2 * (w - 1) * 2 * 4 * elem, "halo bytes of {world}");
        assert!(group.halo_exchange(&x, 0, 7).is_err());
        assert_eq!(group.halo_exchange(&x, 2, 1).unwrap_err().argument, "dim");
    }
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
