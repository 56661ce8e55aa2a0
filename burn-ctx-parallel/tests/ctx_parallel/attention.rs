use burn::tensor::{Device, Distribution, Tensor, module::attention, ops::AttentionModuleOptions};
use burn_ctx_parallel::planner::lpt_assign;
use burn_ctx_parallel::{DeviceGroup, HybridSplit, head_parallel_attention, head_parallel_bytes_per_rank, hybrid_attention, ring_attention, sparse_sequence_attention};
use burn_sparse_attn::{CriticalKeys, SelectionConfig, select_critical_keys, sparse_attention};

/// Splits `x` along the sequence into `world` shards (the first ones one longer when uneven).
fn shard(x: &Tensor<4>, world: usize) -> Vec<Tensor<4>> {
    let s = x.dims()[2];
    let mut out = Vec::new();
    let mut start = 0;
    for r in 0..world {
        let len = s / world + usize::from(r < s % world);
        out.push(x.clone().narrow(2, start, len));
        start += len;
    }
    out
}

fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// Output and input gradients of `Σ w ∘ f(q, k, v)`.
fn run(device: &Device, data: &[Tensor<4>; 4], f: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>) -> [Tensor<4>; 4] {
    let ad = device.clone().autodiff();
    let [q, k, v] = [0, 1, 2].map(|i| data[i].clone().autodiff().require_grad());
    let out = f(q.clone(), k.clone(), v.clone());
    let grads = (out.clone() * data[3].clone().autodiff()).sum().backward();
    let _ = ad;
    [out.inner(), q.grad(&grads).unwrap(), k.grad(&grads).unwrap(), v.grad(&grads).unwrap()]
}

#[test]
fn head_and_ring_sharding_equal_unsharded_attention() {
    let device = Device::flex();
    let (b, h, s, d) = (1, 12, 29, 16);
    let data = [0, 1, 2, 3].map(|_| Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device));
    let dense = |q, k, v| attention(q, k, v, None, None, AttentionModuleOptions::default());
    let expected = run(&device, &data, dense);
    for world in [1usize, 2, 3, 4] {
        let group = DeviceGroup::virtual_ranks(&device, world).unwrap();
        let head = run(&device, &data, |q, k, v| {
            let out = head_parallel_attention(&group, shard(&q, world), shard(&k, world), shard(&v, world), |_, q, k, v| Ok(dense(q, k, v))).unwrap();
            Tensor::cat(out, 2)
        });
        let ring = run(&device, &data, |q, k, v| Tensor::cat(ring_attention(&group, shard(&q, world), shard(&k, world), shard(&v, world), None).unwrap(), 2));
        for (name, got) in [("head", head), ("ring", ring)] {
            for (i, (g, e)) in got.into_iter().zip(expected.iter()).enumerate() {
                let diff = max_diff(g, e.clone());
                assert!(diff < 2e-5, "{name} sharding over {world} ranks, {}: differs by {diff}", ["output", "dq", "dk", "dv"][i]);
            }
        }
    }
}

#[test]
fn head_sharding_runs_sparse_attention_per_head_shard() {
    let device = Device::flex();
    let (b, h, s, d, g, budget) = (2, 4, 40, 16, 8, 9);
    let data = [0, 1, 2, 3].map(|_| Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device));
    let sparse = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| {
        let keys = select_critical_keys(q.clone().narrow(3, 0, 8), k.clone().narrow(3, 0, 8), SelectionConfig::new(g, budget)).unwrap();
        sparse_attention(q, k, v, &keys, None).unwrap()
    };
    let expected = run(&device, &data, sparse);
    for world in [2usize, 4] {
        let group = DeviceGroup::virtual_ranks(&device, world).unwrap();
        let got = run(&device, &data, |q, k, v| {
            Tensor::cat(head_parallel_attention(&group, shard(&q, world), shard(&k, world), shard(&v, world), |_, q, k, v| Ok(sparse(q, k, v))).unwrap(), 2)
        });
        for (i, (g, e)) in got.into_iter().zip(expected.iter()).enumerate() {
            assert!(max_diff(g, e.clone()) < 2e-5, "sparse head sharding over {world}, tensor {i}");
        }
    }
}

#[test]
fn communication_matches_the_formulas_and_bad_splits_are_named() {
    let device = Device::flex();
    let (b, h, s, d) = (1, 8, 32, 16);
    let x = Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
    for world in [2usize, 4] {
        let group = DeviceGroup::virtual_ranks(&device, world).unwrap();
        head_parallel_attention(&group, shard(&x, world), shard(&x, world), shard(&x, world), |_, q, k, v| Ok(attention(q, k, v, None, None, AttentionModuleOptions::default()))).unwrap();
        assert_eq!(group.stats().bytes, world as u64 * head_parallel_bytes_per_rank(b, h, s, d, world));
        group.reset_stats();
        ring_attention(&group, shard(&x, world), shard(&x, world), shard(&x, world), None).unwrap();
        // K and V shards each travel world − 1 hops from every rank.
        assert_eq!(group.stats().bytes, (2 * (world - 1) * world * b * h * (s / world) * d * 4) as u64);
    }
    let group = DeviceGroup::virtual_ranks(&device, 3).unwrap();
    let err = head_parallel_attention(&group, shard(&x, 3), shard(&x, 3), shard(&x, 3), |_, q, k, v| Ok(attention(q, k, v, None, None, AttentionModuleOptions::default()))).unwrap_err();
    assert!(err.to_string().contains("divisible by the world size 3"), "{err}");
}

/// Splits along the sequence into shards of `units` aligned units of `align` positions each.
fn shard_aligned(x: &Tensor<4>, units: &[usize], align: usize) -> Vec<Tensor<4>> {
    let mut start = 0;
    units
        .iter()
        .map(|&u| {
            let len = (u * align).min(x.dims()[2] - start);
            let part = x.clone().narrow(2, start, len);
            start += len;
            part
        })
        .collect()
}

#[test]
fn sparse_sequence_sharding_fetches_only_selected_keys_and_equals_unsharded() {
    let device = Device::flex();
    let (b, h, s, d, g) = (2, 3, 40, 16, 4);
    let data = [0, 1, 2, 3].map(|_| Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device));
    let low_rank = [0, 1].map(|_| Tensor::<4>::random([b, h, s, 4], Distribution::Normal(0.0, 1.0), &device));
    // Units of 4 positions: 10 of them, split unevenly (and over a non-power-of-two world).
    for (block, budget) in [(1, 7), (4, 3), (1, 40)] {
        let keys = select_critical_keys(low_rank[0].clone(), low_rank[1].clone(), SelectionConfig::new(g, budget).with_key_block(block)).unwrap();
        let expected = run(&device, &data, |q, k, v| sparse_attention(q, k, v, &keys, None).unwrap());
        for split in [vec![10], vec![6, 4], vec![3, 3, 4], vec![1, 4, 2, 3]] {
            let world = split.len();
            let group = DeviceGroup::virtual_ranks(&device, world).unwrap();
            let mut index = Vec::new();
            let mut host = Vec::new();
            let mut first_group = 0;
            for &units in &split {
                let idx = keys.indices().clone().narrow(2, first_group, units);
                host.push(idx.to_data().convert::<i64>().try_into_vec::<i64>().unwrap());
                index.push(CriticalKeys::new(idx, g, block, units * 4, s).unwrap());
                first_group += units;
            }
            let parts = |x: &Tensor<4>| shard_aligned(x, &split, 4);
            let got = run(&device, &data, |q, k, v| Tensor::cat(sparse_sequence_attention(&group, parts(&q), parts(&k), parts(&v), &index, None).unwrap(), 2));
            for (i, (got, want)) in got.into_iter().zip(expected.iter()).enumerate() {
                let diff = max_diff(got, want.clone());
                assert!(diff < 2e-5, "block {block}, budget {budget}, shards {split:?}, {}: differs by {diff}", ["output", "dq", "dk", "dv"][i]);
            }
            // Bytes: each remote selected row once per (batch, head), K and V.
            group.reset_stats();
            sparse_sequence_attention(&group, parts(&data[0]), parts(&data[1]), parts(&data[2]), &index, None).unwrap();
            let mut rows = 0;
            let mut start = 0;
            for (r, ids) in host.iter().enumerate() {
                let end = start + split[r] * 4;
                for per_head in ids.chunks_exact(ids.len() / (b * h)) {
                    let distinct: std::collections::BTreeSet<i64> = per_head.iter().copied().collect();
                    rows += distinct.iter().map(|&u| (u as usize * block..(u as usize + 1) * block).filter(|&key| key < start || key >= end).count()).sum::<usize>();
                }
                start = end;
            }
            assert_eq!(group.stats().bytes, (2 * rows * d * 4) as u64, "block {block}, shards {split:?}");
            // Fewer bytes than every rank pulling every remote K/V row, unless all keys are selected.
            let all_remote = (2 * (world - 1) * b * h * s * d * 4) as u64;
            if budget * block < s && world > 1 {
                assert!(group.stats().bytes < all_remote);
            }
        }
    }
    // Shards must keep key blocks whole.
    let keys = select_critical_keys(low_rank[0].clone(), low_rank[1].clone(), SelectionConfig::new(g, 3).with_key_block(8)).unwrap();
    let group = DeviceGroup::virtual_ranks(&device, 2).unwrap();
    let index: Vec<_> = [(0, 3), (3, 7)].iter().map(|&(from, n)| CriticalKeys::new(keys.indices().clone().narrow(2, from, n), g, 8, n * 4, s).unwrap()).collect();
    let parts = |x: &Tensor<4>| shard_aligned(x, &[3, 7], 4);
    let err = sparse_sequence_attention(&group, parts(&data[0]), parts(&data[1]), parts(&data[2]), &index, None).unwrap_err();
    assert_eq!(err.argument, "k", "{err}");
}

#[test]
fn hybrid_head_by_sequence_split_equals_unsharded_sparse_attention() {
    let device = Device::flex();
    let (b, h, s, d, g) = (1, 6, 48, 8, 4);
    let data = [0, 1, 2, 3].map(|_| Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device));
    let low_rank = [0, 1].map(|_| Tensor::<4>::random([b, h, s, 4], Distribution::Normal(0.0, 1.0), &device));
    let keys = select_critical_keys(low_rank[0].clone(), low_rank[1].clone(), SelectionConfig::new(g, 2).with_key_block(4)).unwrap();
    let expected = run(&device, &data, |q, k, v| sparse_attention(q, k, v, &keys, None).unwrap());
    // Per-head costs 1 − sparsity, as the planner would see them.
    let costs = [0.9, 0.1, 0.5, 0.3, 0.8, 0.2];
    for (head_groups, seq_groups) in [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1), (1, 3), (3, 2)] {
        let world = head_groups * seq_groups;
        let group = DeviceGroup::virtual_ranks(&device, world).unwrap();
        let split = HybridSplit { head_groups, seq_groups, heads: lpt_assign(&costs, head_groups) };
        let units = s / 4;
        let shard_units: Vec<usize> = (0..world).map(|r| (r + 1) * units / world - r * units / world).collect();
        let group_len = |sg: usize| shard_units[sg * head_groups..(sg + 1) * head_groups].iter().sum::<usize>() * 4;
        let index = |hg: usize, sg: usize| {
            let heads: Vec<i64> = split.heads[hg].iter().map(|&x| x as i64).collect();
            let first = (0..sg).map(group_len).sum::<usize>() / g;
            let idx = keys.indices().clone().select(1, Tensor::from_data(burn::tensor::TensorData::new(heads.clone(), [heads.len()]), &device));
            CriticalKeys::new(idx.narrow(2, first, group_len(sg) / g), g, 4, group_len(sg), s)
        };
        let got = run(&device, &data, |q, k, v| {
            let parts = |x: &Tensor<4>| shard_aligned(x, &shard_units, 4);
            Tensor::cat(hybrid_attention(&group, &split, parts(&q), parts(&k), parts(&v), index).unwrap(), 2)
        });
        for (i, (got, want)) in got.into_iter().zip(expected.iter()).enumerate() {
            let diff = max_diff(got, want.clone());
            assert!(diff < 2e-5, "{head_groups} head groups × {seq_groups} sequence groups, {}: differs by {diff}", ["output", "dq", "dk", "dv"][i]);
        }
    }
    let group = DeviceGroup::virtual_ranks(&device, 4).unwrap();
    let bad = HybridSplit { head_groups: 3, seq_groups: 1, heads: lpt_assign(&costs, 3) };
    let parts = |x: &Tensor<4>| shard_aligned(x, &[3, 3, 3, 3], 4);
    let err = hybrid_attention(&group, &bad, parts(&data[0]), parts(&data[1]), parts(&data[2]), |_, _| unreachable!()).unwrap_err();
    assert_eq!(err.argument, "split");
}
