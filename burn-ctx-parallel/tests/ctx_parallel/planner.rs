use burn_ctx_parallel::planner::*;

#[test]
fn lpt_balances_what_a_contiguous_split_cannot() {
    // Two dense heads next to each other: a contiguous split puts both on rank 0.
    let costs = [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05];
    let naive = straggler_penalty(&costs, &naive_assign(10, 4));
    let lpt = straggler_penalty(&costs, &lpt_assign(&costs, 4));
    assert!(
        (naive - 0.6).abs() < 1e-9 && lpt.abs() < 1e-9,
        "naive {naive}, lpt {lpt}"
    );
    let mut all: Vec<usize> = lpt_assign(&costs, 4).concat();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[test]
fn planner_prefers_sequence_sharding_across_slow_links_when_sparse() {
    let cluster = ClusterSpec {
        devices: 16,
        devices_per_node: 8,
        nvlink_gbps: 300.0,
        ib_gbps: 25.0,
        tflops: 400.0,
        latency_s: 10e-6,
    };
    let work = AttentionWorkload {
        seq: 131_072,
        head_dim: 128,
        head_sparsity: vec![0.95; 16],
        remote_fraction: 0.9,
        elem_bytes: 2,
    };
    let plans = plan(&cluster, &work);
    // Every head group that divides both the 16 devices and the 16 heads, once.
    let mut splits: Vec<(usize, usize)> =
        plans.iter().map(|p| (p.head_group, p.seq_group)).collect();
    splits.sort_unstable();
    assert_eq!(splits, [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)]);
    // Head-only sharding over two nodes pays InfiniBand for its all-to-alls; the best split
    // keeps head groups inside a node and shards the sequence across nodes.
    let best = &plans[0];
    assert!(best.head_group <= 8 && best.seq_group >= 2, "{best:?}");
    let head_only = plans.iter().find(|p| p.seq_group == 1).unwrap();
    assert!(
        head_only.comm_s > 2.0 * best.comm_s,
        "{head_only:?} against {best:?}"
    );
    // With InfiniBand as fast as NVLink the head-only all-to-all gets much cheaper.
    let flat = ClusterSpec {
        ib_gbps: 300.0,
        ..cluster
    };
    let head_only_flat = estimate(&flat, &work, 16, 1, true);
    assert!(
        head_only_flat.comm_s < head_only.comm_s / 5.0,
        "{head_only_flat:?}"
    );
}

#[test]
fn a_link_fit_recovers_latency_and_bandwidth() {
    // 20 µs + bytes / 2 GB/s at four sizes.
    let points: Vec<(f64, f64)> = [1e3, 1e4, 1e5, 1e6]
        .iter()
        .map(|&b| (b, 20e-6 + b / 2e9))
        .collect();
    let link = LinkModel::fit(&points).unwrap();
    assert!((link.latency_s - 20e-6).abs() < 1e-9, "{link:?}");
    assert!((link.bytes_per_s / 2e9 - 1.0).abs() < 1e-6, "{link:?}");
    assert!((link.seconds(1e6, 2.0) - (40e-6 + 5e-4)).abs() < 1e-9);
    // One size, or time falling with size, cannot be fitted.
    assert!(LinkModel::fit(&points[..1]).is_none());
    assert!(LinkModel::fit(&[(1e3, 2e-3), (1e6, 1e-3)]).is_none());
    // A measured cluster: every message pays the latency, so a head group of 4 pays 8 × 3.
    let cluster = ClusterSpec::measured(4, link, 1e12);
    let work = AttentionWorkload {
        seq: 4096,
        head_dim: 64,
        head_sparsity: vec![0.0; 8],
        remote_fraction: 0.75,
        elem_bytes: 4,
    };
    let with = estimate(&cluster, &work, 4, 1, true);
    let without = estimate(
        &ClusterSpec {
            latency_s: 0.0,
            ..cluster
        },
        &work,
        4,
        1,
        true,
    );
    assert!(
        (with.comm_s - without.comm_s - 24.0 * 20e-6).abs() < 1e-9,
        "{with:?} {without:?}"
    );
}
