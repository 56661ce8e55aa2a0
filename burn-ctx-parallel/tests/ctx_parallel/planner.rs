use burn_ctx_parallel::planner::*;

#[test]
fn lpt_balances_what_a_contiguous_split_cannot() {
    // Two dense heads next to each other: a contiguous split puts both on rank 0.
    let costs = [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05];
    let naive = straggler_penalty(&costs, &naive_assign(10, 4));
    let lpt = straggler_penalty(&costs, &lpt_assign(&costs, 4));
    assert!((naive - 0.6).abs() < 1e-9 && lpt.abs() < 1e-9, "naive {naive}, lpt {lpt}");
    let mut all: Vec<usize> = lpt_assign(&costs, 4).concat();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[test]
fn planner_prefers_sequence_sharding_across_slow_links_when_sparse() {
    let cluster = ClusterSpec { devices: 16, devices_per_node: 8, nvlink_gbps: 300.0, ib_gbps: 25.0, tflops: 400.0 };
    let work = AttentionWorkload { seq: 131_072, head_dim: 128, head_sparsity: vec![0.95; 16], remote_fraction: 0.9, elem_bytes: 2 };
    let plans = plan(&cluster, &work);
    let best = &plans[0];
    assert_eq!(best.head_group * best.seq_group, 16);
    let head_only = plans.iter().find(|p| p.seq_group == 1).unwrap();
    assert!(best.total_s <= head_only.total_s);
    assert!(best.head_group <= 8, "head groups stay inside a node: {best:?}");
}
