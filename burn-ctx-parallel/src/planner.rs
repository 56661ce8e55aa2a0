//! DSV's sparsity-aware placement: heads on ranks by Longest-Processing-Time, and a cost
//! model that chooses the head × sequence split of a device group.

/// Longest-Processing-Time greedy: heads sorted by cost, each to the currently lightest of
/// `ranks` bins. Returns the heads of every rank.
pub fn lpt_assign(costs: &[f64], ranks: usize) -> Vec<Vec<usize>> {
    assert!(ranks > 0, "lpt_assign: `ranks` must be ≥ 1");
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut bins = vec![Vec::new(); ranks];
    let mut load = vec![0.0f64; ranks];
    for head in order {
        let lightest = (0..ranks)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .expect("ranks ≥ 1");
        bins[lightest].push(head);
        load[lightest] += costs[head];
    }
    bins
}

/// Contiguous split of heads over ranks (what a plain head-sharded run does).
pub fn naive_assign(heads: usize, ranks: usize) -> Vec<Vec<usize>> {
    (0..ranks)
        .map(|r| (r * heads / ranks..(r + 1) * heads / ranks).collect())
        .collect()
}

/// Slowest rank's load over the mean load, minus one (0 = perfectly balanced).
pub fn straggler_penalty(costs: &[f64], assignment: &[Vec<usize>]) -> f64 {
    let loads: Vec<f64> = assignment
        .iter()
        .map(|hs| hs.iter().map(|&h| costs[h]).sum())
        .collect();
    let mean = loads.iter().sum::<f64>() / loads.len() as f64;
    loads.iter().copied().fold(0.0, f64::max) / mean - 1.0
}

/// What one message between two ranks costs: `latency_s + bytes / bytes_per_s`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Seconds per message whatever its size.
    pub latency_s: f64,
    /// Bytes per second once a message is under way.
    pub bytes_per_s: f64,
}

impl LinkModel {
    /// The least-squares line `seconds = latency + bytes / bandwidth` through measured
    /// `(bytes, seconds)` points of one message size each (a point-to-point sweep); needs two
    /// or more sizes. A negative intercept (noise at small sizes) is clamped to zero.
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        let n = points.len() as f64;
        let (mx, my) = (
            points.iter().map(|p| p.0).sum::<f64>() / n,
            points.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if points.len() < 2 || sxx <= 0.0 || sxy <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        Some(Self {
            latency_s: (my - slope * mx).max(0.0),
            bytes_per_s: 1.0 / slope,
        })
    }

    /// Seconds for `messages` messages carrying `bytes` in all, one after another.
    pub fn seconds(&self, bytes: f64, messages: f64) -> f64 {
        messages * self.latency_s + bytes / self.bytes_per_s
    }
}

/// The machines.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClusterSpec {
    /// Devices in all.
    pub devices: usize,
    /// Devices per node (joined by NVLink; nodes by InfiniBand).
    pub devices_per_node: usize,
    /// Per-device NVLink bandwidth, GB/s.
    pub nvlink_gbps: f64,
    /// Per-device inter-node bandwidth, GB/s.
    pub ib_gbps: f64,
    /// Sustained attention throughput per device, TFLOP/s.
    pub tflops: f64,
    /// Seconds per message between two devices (launch and synchronisation), whatever the
    /// link.
    pub latency_s: f64,
}

impl ClusterSpec {
    /// One machine of `devices` ranks calibrated on measurements: `link` fitted to a
    /// point-to-point sweep between its ranks ([`LinkModel::fit`]) and `flops_per_s` the
    /// attention throughput one rank sustained (forward + backward FLOPs over the measured
    /// time).
    pub fn measured(devices: usize, link: LinkModel, flops_per_s: f64) -> Self {
        let gbps = link.bytes_per_s / 1e9;
        Self {
            devices,
            devices_per_node: devices,
            nvlink_gbps: gbps,
            ib_gbps: gbps,
            tflops: flops_per_s / 1e12,
            latency_s: link.latency_s,
        }
    }
}

/// One attention layer's work.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionWorkload {
    /// Tokens.
    pub seq: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Measured sparsity of every head (fraction of keys skipped).
    pub head_sparsity: Vec<f64>,
    /// Share of a rank's selected keys held by other sequence shards (σ in DSV).
    pub remote_fraction: f64,
    /// Bytes per element (2 for bf16).
    pub elem_bytes: usize,
}

/// The planner's estimate for one split.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanEstimate {
    /// Ranks sharing heads (all-to-all group).
    pub head_group: usize,
    /// Ranks sharing the sequence.
    pub seq_group: usize,
    /// Compute seconds of the slowest rank (forward + backward).
    pub compute_s: f64,
    /// Communication seconds per rank.
    pub comm_s: f64,
    /// `compute_s + comm_s`.
    pub total_s: f64,
    /// Straggler penalty of the head placement.
    pub imbalance: f64,
}

/// Estimates one attention layer (forward + backward, 3.5× the forward FLOPs) for a
/// `head_group × seq_group` split, heads placed by LPT (or contiguously when `lpt` is
/// false). Head-wise groups sit inside a node when they fit, sequence-wise across nodes.
pub fn estimate(
    cluster: &ClusterSpec,
    work: &AttentionWorkload,
    head_group: usize,
    seq_group: usize,
    lpt: bool,
) -> PlanEstimate {
    let heads = work.head_sparsity.len();
    let (s, d) = (work.seq as f64, work.head_dim as f64);
    let costs: Vec<f64> = work.head_sparsity.iter().map(|sp| 1.0 - sp).collect();
    let assignment = if lpt {
        lpt_assign(&costs, head_group)
    } else {
        naive_assign(heads, head_group)
    };
    let slowest = assignment
        .iter()
        .map(|hs| hs.iter().map(|&h| costs[h]).sum::<f64>())
        .fold(0.0, f64::max);
    // Per head: 4·S·(1−s)·S·D forward over the whole sequence, split over the sequence group.
    let flops = 3.5 * 4.0 * s * s * d * slowest / seq_group as f64;
    let compute_s = flops / (cluster.tflops * 1e12);
    let local_heads = heads as f64 / head_group as f64;
    let bw = |group: usize, stride: usize| if group * stride <= cluster.devices_per_node { cluster.nvlink_gbps } else { cluster.ib_gbps } * 1e9;
    // Ulysses inside the head group: each rank holds S/(sg·hg) tokens of all heads and swaps
    // (hg−1)/hg of them, for q, k, v and o, forward and backward.
    let (hg, sg) = (head_group as f64, seq_group as f64);
    let head_bytes =
        2.0 * 4.0 * heads as f64 * (s / (sg * hg)) * d * (hg - 1.0) / hg * work.elem_bytes as f64;
    // Sparse sequence parallelism: fetch only the selected remote K and V, and return their
    // gradients.
    let mean_density = costs.iter().sum::<f64>() / heads as f64;
    let seq_bytes = if seq_group > 1 {
        2.0 * 2.0
            * local_heads
            * mean_density
            * work.remote_fraction
            * s
            * d
            * work.elem_bytes as f64
    } else {
        0.0
    };
    // Messages: each rank swaps with the other hg − 1 in four all-to-alls forward and four
    // backward; sparse sequence sharding asks (indices), receives (rows) and returns
    // gradients, each with the other sg − 1.
    let messages = 8.0 * (hg - 1.0) + if seq_group > 1 { 3.0 * (sg - 1.0) } else { 0.0 };
    let comm_s = head_bytes / bw(head_group, 1)
        + seq_bytes / bw(seq_group, head_group)
        + messages * cluster.latency_s;
    PlanEstimate {
        head_group,
        seq_group,
        compute_s,
        comm_s,
        total_s: compute_s + comm_s,
        imbalance: straggler_penalty(&costs, &assignment),
    }
}

/// Every `head_group × seq_group = devices` split (head groups dividing the head count),
/// best first.
pub fn plan(cluster: &ClusterSpec, work: &AttentionWorkload) -> Vec<PlanEstimate> {
    let heads = work.head_sparsity.len();
    let mut out: Vec<PlanEstimate> = (1..=cluster.devices)
        .filter(|g| cluster.devices.is_multiple_of(*g) && heads.is_multiple_of(*g))
        .map(|g| estimate(cluster, work, g, cluster.devices / g, true))
        .collect();
    out.sort_by(|a, b| a.total_s.total_cmp(&b.total_s));
    out
}
