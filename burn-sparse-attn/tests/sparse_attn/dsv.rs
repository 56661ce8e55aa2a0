//! The DSV module: predictor learning, stage switch, gradient isolation, dense equivalence,
//! save/load.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_sparse_attn::dsv::{
    DsvAttention, DsvAttentionConfig, DsvHost, DsvPolicy, DsvStage, DsvTape, DsvTrainer,
    PredictorInput, Reorder, TokenGrid,
};

use burn_sparse_attn::{SelectionConfig, select_critical_keys};

use crate::common::*;

const GRID: TokenGrid = TokenGrid {
    frames: 4,
    height: 8,
    width: 8,
};
const HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const D_MODEL: usize = HEADS * HEAD_DIM;

/// A minimal host: projections around a DSV layer.
#[derive(Module, Debug)]
struct Host {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    attn: DsvAttention,
}

impl DsvHost for Host {
    fn dsv_layers(&self) -> Vec<&DsvAttention> {
        vec![&self.attn]
    }

    fn dsv_layers_mut(&mut self) -> Vec<&mut DsvAttention> {
        vec![&mut self.attn]
    }
}

impl Host {
    fn new(config: DsvAttentionConfig, device: &Device) -> Self {
        let linear = || {
            LinearConfig::new(D_MODEL, D_MODEL)
                .with_bias(false)
                .init(device)
        };
        Self {
            wq: linear(),
            wk: linear(),
            wv: linear(),
            attn: config.init(device),
        }
    }

    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, s, _] = x.dims();
        x.reshape([b, s, HEADS, HEAD_DIM]).swap_dims(1, 2)
    }

    /// Inference: records nothing.
    fn forward(&self, x: Tensor<3>) -> Tensor<4> {
        let (q, k, v) = self.qkv(x.clone());
        self.attn.forward(x, q, k, v, GRID).unwrap()
    }

    /// A training forward, recorded on `tape`.
    fn forward_training(&self, x: Tensor<3>, tape: &DsvTape) -> Tensor<4> {
        let (q, k, v) = self.qkv(x.clone());
        self.attn.forward_training(x, q, k, v, GRID, tape).unwrap()
    }

    fn qkv(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        (
            self.heads(self.wq.forward(x.clone())),
            self.heads(self.wk.forward(x.clone())),
            self.heads(self.wv.forward(x)),
        )
    }

    /// One training step at learning rate 0: the layer profiles and counts the step, the
    /// weights stay.
    fn profiled(self, x: Tensor<3>) -> Self {
        let tape = DsvTape::new();
        let loss = self.forward_training(x, &tape).square().mean();
        let mut opt: ModuleOptimizer = burn::optim::SgdConfig::new().init();
        DsvTrainer::new(0.0).step(self, loss, tape, &mut opt, 0.0).0
    }
}

fn small_config() -> DsvAttentionConfig {
    small_policy().config()
}

fn small_policy() -> DsvPolicy {
    DsvPolicy::new()
        .with_predictor_rank(16)
        .with_query_cube([2, 4, 4])
        .with_min_sparse_len(0)
        .with_profile_every(5)
        .with_sample_stride(4)
}

trait PolicyExt {
    fn config(self) -> DsvAttentionConfig;
}

impl PolicyExt for DsvPolicy {
    fn config(self) -> DsvAttentionConfig {
        DsvAttentionConfig::new(D_MODEL, HEADS, HEAD_DIM, self)
    }
}

/// Tokens of the same 2×4×4 cube share a cluster embedding: attention is block-sparse
/// (each query's mass sits on its cube's 32 of 256 tokens) and the structure is planted.
fn clustered_tokens(seed: u64, device: &Device) -> Tensor<3> {
    let mut rng = Rng::new(seed);
    let clusters: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..D_MODEL).map(|_| 1.5 * 1.7 * rng.uniform()).collect())
        .collect();
    let order = GRID.cube_order([2, 4, 4]);
    let mut cube_of = vec![0usize; GRID.len()];
    for (pos, &token) in order.iter().enumerate() {
        cube_of[token] = pos / 32;
    }
    let data: Vec<f32> = (0..GRID.len())
        .flat_map(|t| {
            clusters[cube_of[t]]
                .iter()
                .map(|c| c + 0.1 * rng.uniform())
                .collect::<Vec<_>>()
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [1, GRID.len(), D_MODEL]), device)
}

/// Identity projections (frozen by a zero learning rate): q = k = v = x, split into heads.
fn identity_host(config: DsvAttentionConfig, device: &Device) -> Host {
    let host = Host::new(config, device);
    let eye = || Tensor::<2>::eye(D_MODEL, device);
    Host {
        wq: Linear {
            weight: burn::module::Param::from_tensor(eye()),
            bias: None,
        },
        wk: Linear {
            weight: burn::module::Param::from_tensor(eye()),
            bias: None,
        },
        wv: Linear {
            weight: burn::module::Param::from_tensor(eye()),
            bias: None,
        },
        ..host
    }
}

/// Both projections of a fresh predictor get their own gradient at the first step (a
/// query-key predictor starts with equal weights, which must still be two leaves).
#[test]
fn every_predictor_weight_gets_a_gradient_at_the_first_step() {
    for input in [PredictorInput::QueryKey, PredictorInput::LayerInput] {
        let device = Device::flex().autodiff();
        let host = identity_host(small_policy().with_predictor_input(input).config(), &device);
        let x = clustered_tokens(1, &device);
        let tape = DsvTape::new();
        let loss = host.forward_training(x, &tape).square().mean();
        let grads = DsvTrainer::backward(&host, loss, tape);
        assert!(
            grads.predictor_losses[0].is_some(),
            "a training forward records a predictor loss"
        );
        let ids = host.attn.predictor_param_ids();
        let grads = grads.predictor_gradients();
        assert_eq!(
            grads.len(),
            ids.len(),
            "{input:?}: {} of {} predictor weights got a gradient",
            grads.len(),
            ids.len()
        );
    }
}

/// Either predictor input learns the planted structure when q = k = x.
#[test]
fn predictor_learns_planted_structure_and_switches_stage() {
    for input in [PredictorInput::QueryKey, PredictorInput::LayerInput] {
        let device = Device::flex().autodiff();
        let mut host = identity_host(
            small_policy()
                .with_switch_loss(0.02)
                .with_predictor_input(input)
                .config(),
            &device,
        );
        let x = clustered_tokens(1, &device);
        let mut model_optim: ModuleOptimizer = AdamWConfig::new().init();
        let mut trainer = DsvTrainer::new(1e-2);
        let mut losses = Vec::new();
        for _ in 0..150 {
            let tape = DsvTape::new();
            let loss = host.forward_training(x.clone(), &tape).square().mean();
            let (next, report) = trainer.step(host, loss, tape, &mut model_optim, 0.0);
            host = next;
            losses.push(
                report.predictor_losses[0].expect("training forward records a predictor loss"),
            );
        }
        let stats = host.attn.stats();
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(
            last < 0.1 * first,
            "{input:?}: predictor loss fell only from {first} to {last}"
        );
        assert_eq!(
            stats.stage,
            DsvStage::Sparse,
            "{input:?}: loss {:?} should have crossed the switch threshold",
            stats.predictor_loss
        );
        let sparsity = stats.head_sparsity.expect("profiled");
        assert!(
            sparsity.iter().all(|&s| s > 0.8),
            "planted sparsity ≈ 0.87, measured {sparsity:?}"
        );
        let recall = stats.critical_recall.expect("profiled");
        assert!(
            recall.iter().all(|&r| r >= 0.9),
            "{input:?}: recall of critical mass {recall:?}"
        );
        // After the switch the layer really runs sparse, with budgets from the profile.
        assert!(stats.ran_sparse && host.attn.runs_sparse(GRID.len()));
        assert!(
            stats.head_budgets.iter().all(|&k| k < GRID.len() / 4),
            "budgets {:?}",
            stats.head_budgets
        );
    }
}

/// Attention that depends on position alone, as RoPE makes it in part: the layer input is the
/// same at every token, the queries and keys carry the planted cube structure. A predictor of
/// q and k learns it; one of x cannot tell the tokens apart.
#[test]
fn only_a_query_key_predictor_learns_positional_attention() {
    let device = Device::flex().autodiff();
    let x = Tensor::<3>::ones([1, GRID.len(), D_MODEL], &device);
    let positional = clustered_tokens(2, &device);
    let train = |input: PredictorInput| {
        let mut host = Host::new(
            small_policy()
                .with_switch_loss(0.02)
                .with_predictor_input(input)
                .config(),
            &device,
        );
        let mut model_optim: ModuleOptimizer = AdamWConfig::new().init();
        let mut trainer = DsvTrainer::new(1e-2);
        let mut last = f32::NAN;
        for _ in 0..100 {
            let qkv = host.heads(positional.clone());
            let tape = DsvTape::new();
            let loss = host
                .attn
                .forward_training(x.clone(), qkv.clone(), qkv.clone(), qkv, GRID, &tape)
                .unwrap()
                .square()
                .mean();
            let (next, report) = trainer.step(host, loss, tape, &mut model_optim, 0.0);
            host = next;
            last = report.predictor_losses[0].expect("recorded");
        }
        (last, host.attn.stats())
    };
    let (loss, stats) = train(PredictorInput::QueryKey);
    assert!(loss < 0.02, "query/key predictor loss {loss}");
    assert_eq!(stats.stage, DsvStage::Sparse);
    let recall = stats.critical_recall.expect("profiled");
    assert!(
        recall.iter().all(|&r| r >= 0.9),
        "query/key predictor recall {recall:?}"
    );
    let (loss, stats) = train(PredictorInput::LayerInput);
    assert!(
        loss > 0.3,
        "a predictor of a constant input cannot rank keys, yet its loss is {loss}"
    );
    assert_eq!(stats.stage, DsvStage::Dense);
}

/// A trainable host and a random batch of two, after one training forward has profiled the
/// heads, with the layer switched to the sparse stage.
fn sparse_host(config: DsvAttentionConfig) -> (Host, Tensor<3>) {
    let device = Device::flex().autodiff();
    let host = Host::new(config, &device);
    let x = Tensor::<3>::random(
        [2, GRID.len(), D_MODEL],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mut host = host.profiled(x.clone());
    host.attn.set_stage(DsvStage::Sparse);
    (host, x)
}

#[test]
fn host_gradients_are_untouched_by_the_predictor() {
    let (host, x) = sparse_host(small_policy().with_sparsity_threshold(0.0).config());

    // Two identical sparse forwards (no profile falls between them): one trains the
    // predictor alongside, one does not.
    let with = {
        let tape = DsvTape::new();
        let host_loss = (host.forward_training(x.clone(), &tape) * 0.5).sum();
        DsvTrainer::backward(&host, host_loss, tape)
    };
    assert!(with.predictor_losses[0].is_some(), "recorded");
    let without = {
        let host_loss = (host.forward(x.clone()) * 0.5).sum();
        DsvTrainer::backward(&host, host_loss, DsvTape::new())
    };
    assert!(host.attn.runs_sparse(GRID.len()));
    for (name, w) in [
        ("wq", &host.wq.weight),
        ("wk", &host.wk.weight),
        ("wv", &host.wv.weight),
    ] {
        let a = with.host_gradients().get::<2>(w.id).expect("host gradient");
        let b = without
            .host_gradients()
            .get::<2>(w.id)
            .expect("host gradient");
        assert_close(
            a,
            b,
            0.0,
            &format!("{name} gradient with vs without predictor loss"),
        );
    }
    let ids = host.attn.predictor_param_ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(with.predictor_gradients().len(), 2);
    assert!(
        without.predictor_gradients().is_empty()
            && ids
                .iter()
                .all(|id| without.host_gradients().get::<3>(*id).is_none()),
        "the host loss must not reach the predictor"
    );
}

#[test]
fn full_budget_equals_dense_attention_and_its_gradients() {
    let config = small_policy()
        .with_mass_threshold(1.0)
        .with_min_budget_fraction(1.0)
        .with_sparsity_threshold(0.0)
        .config();
    let (host, x) = sparse_host(config);

    let sparse = host.forward(x.clone());
    assert!(host.attn.runs_sparse(GRID.len()));
    assert!(
        host.attn
            .stats()
            .head_budgets
            .iter()
            .all(|&k| k == GRID.len())
    );
    let heads = |w: &Linear| host.heads(w.forward(x.clone()));
    let dense = burn_attention(heads(&host.wq), heads(&host.wk), heads(&host.wv), None);
    assert_close(
        sparse.clone(),
        dense.clone(),
        1e-4,
        "full-budget DSV vs dense",
    );

    let grads_sparse = sparse.sum().backward();
    let grads_dense = dense.sum().backward();
    for w in [&host.wq.weight, &host.wk.weight, &host.wv.weight] {
        assert_close(
            w.val().grad(&grads_sparse).unwrap(),
            w.val().grad(&grads_dense).unwrap(),
            2e-4,
            "weight gradient",
        );
    }
}

#[test]
fn state_round_trips_through_save_and_load() {
    let device = Device::flex().autodiff();
    let mut host = identity_host(small_policy().with_switch_loss(0.5).config(), &device);
    let x = clustered_tokens(3, &device);
    let mut model_optim: ModuleOptimizer = AdamWConfig::new().init();
    let mut trainer = DsvTrainer::new(1e-2);
    for _ in 0..12 {
        let tape = DsvTape::new();
        let loss = host.forward_training(x.clone(), &tape).square().mean();
        host = trainer.step(host, loss, tape, &mut model_optim, 0.0).0;
    }
    let before = host.attn.stats();
    assert_eq!(before.stage, DsvStage::Sparse);
    let bytes = host.clone().into_record().into_bytes().unwrap();

    let fresh = Host::new(small_policy().with_switch_loss(0.5).config(), &device);
    assert_eq!(fresh.attn.stats().stage, DsvStage::Dense);
    let loaded = fresh
        .try_load_record(ModuleRecord::from_bytes(bytes).unwrap())
        .unwrap();
    let after = loaded.attn.stats();
    assert_eq!((after.stage, after.step), (before.stage, before.step));
    assert_eq!(after.head_sparsity, before.head_sparsity);
    assert_eq!(after.predictor_loss, before.predictor_loss);
    let qk = host.heads(x.clone());
    let (q1, k1) = host
        .attn
        .predictor()
        .forward(x.clone(), qk.clone(), qk.clone());
    let (q2, k2) = loaded.attn.predictor().forward(x, qk.clone(), qk);
    assert_close(q2, q1, 0.0, "loaded predictor q");
    assert_close(k2, k1, 0.0, "loaded predictor k");
}

#[test]
fn bad_inputs_are_named() {
    let device = Device::flex();
    let attn = small_config().init(&device);
    let q = Tensor::<4>::zeros([1, HEADS, GRID.len(), HEAD_DIM], &device);
    let x = Tensor::<3>::zeros([1, GRID.len(), D_MODEL], &device);
    let err = attn
        .forward(
            x.clone(),
            q.clone(),
            q.clone(),
            q.clone(),
            TokenGrid::new(4, 8, 7),
        )
        .unwrap_err();
    assert_eq!(err.argument, "grid");
    let wrong_heads = Tensor::<4>::zeros([1, HEADS + 1, GRID.len(), HEAD_DIM], &device);
    assert_eq!(
        attn.forward(
            x.clone(),
            wrong_heads.clone(),
            wrong_heads.clone(),
            wrong_heads,
            GRID
        )
        .unwrap_err()
        .argument,
        "q"
    );
    let wrong_x = Tensor::<3>::zeros([1, GRID.len(), D_MODEL + 1], &device);
    assert_eq!(
        attn.forward(wrong_x, q.clone(), q.clone(), q, GRID)
            .unwrap_err()
            .argument,
        "x"
    );
}

/// Both predictor inputs round-trip through the config's JSON; a policy saved before
/// `predictor_input` existed (whose checkpoints hold the other predictor shape) is refused
/// with an error naming the field.
#[test]
fn policy_json_round_trips_and_names_a_missing_predictor_input() {
    use burn::config::Config;
    for input in [PredictorInput::QueryKey, PredictorInput::LayerInput] {
        let policy = DsvPolicy::new().with_predictor_input(input);
        assert_eq!(
            DsvPolicy::load_binary(policy.to_string().as_bytes()).unwrap(),
            policy
        );
    }
    let json = DsvPolicy::new().to_string();
    let field = json
        .lines()
        .find(|l| l.contains("\"predictor_input\""))
        .expect("the field is saved");
    let old = json.replace(&format!("{field}\n"), "");
    let err = DsvPolicy::load_binary(old.as_bytes()).unwrap_err();
    assert!(format!("{err:?}").contains("predictor_input"), "{err:?}");
}

/// The reorder into cubes is `cube_order` as an index select, by axis permutation where the
/// cubes divide the grid and by indices where they are cut; `undo` inverts it, and gradients
/// come back to the tokens they left.
#[test]
fn reorder_matches_cube_order_and_inverts() {
    let device = Device::flex().autodiff();
    for (grid, cube) in [
        (TokenGrid::new(4, 8, 8), [1, 4, 4]),
        (TokenGrid::new(4, 8, 8), [2, 2, 4]),
        (TokenGrid::new(3, 5, 6), [2, 4, 4]),
        (TokenGrid::new(2, 4, 4), [1, 1, 1]),
    ] {
        let s = grid.len();
        let x = Tensor::<4>::random([2, 3, s, 5], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let reorder = Reorder::new(grid, cube, &device);
        let order: Vec<i64> = grid.cube_order(cube).iter().map(|&t| t as i64).collect();
        let want = x
            .clone()
            .select(2, Tensor::from_data(TensorData::new(order, [s]), &device));
        let got = reorder.apply(x.clone());
        assert_eq!(
            got.clone().into_data(),
            want.into_data(),
            "grid {grid:?}, cube {cube:?}"
        );
        assert_eq!(
            reorder.undo(got.clone()).into_data(),
            x.clone().into_data(),
            "undo, grid {grid:?}, cube {cube:?}"
        );
        // A weight per position: each token's gradient is the weight of the place it moved to.
        let weights = Tensor::<4>::random([2, 3, s, 5], Distribution::Normal(0.0, 1.0), &device);
        let grads = (got * weights.clone()).sum().backward();
        let grad = x.grad(&grads).expect("x gets a gradient");
        assert_eq!(
            grad.into_data(),
            reorder.undo(weights).inner().into_data(),
            "gradient, grid {grid:?}, cube {cube:?}"
        );
    }
}

/// With a different budget per head, the sparse stage is per-head `select_critical_keys` on the
/// predictor's scores and `sparse_attention`, in cube order, for every head and its gradients.
#[test]
fn per_head_budgets_run_each_head_with_its_own_budget() {
    let policy = small_policy()
        .with_mass_threshold(0.8)
        .with_min_budget_fraction(0.1)
        .with_sparsity_threshold(0.0);
    let device = Device::flex().autodiff();
    device.seed(5);
    // The last head's queries are sharpened, so its attention is sparser and its budget smaller.
    let host = Host::new(policy.clone().config(), &device);
    let sharpen: Vec<f32> = (0..D_MODEL)
        .map(|i| if i >= D_MODEL - HEAD_DIM { 6.0 } else { 1.0 })
        .collect();
    let sharpen =
        Tensor::<1>::from_data(TensorData::new(sharpen, [D_MODEL]), &device).unsqueeze::<2>();
    let host = Host {
        wq: Linear {
            weight: burn::module::Param::from_tensor((host.wq.weight.val() * sharpen).detach()),
            bias: None,
        },
        ..host
    };
    let x = Tensor::<3>::random(
        [2, GRID.len(), D_MODEL],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mut host = host.profiled(x.clone());
    host.attn.set_stage(DsvStage::Sparse);
    let got = host.forward(x.clone());
    let stats = host.attn.stats();
    assert!(host.attn.runs_sparse(GRID.len()));
    let budgets = stats.head_budgets.clone();
    assert!(
        budgets.windows(2).any(|w| w[0] != w[1]),
        "the test needs unequal budgets, got {budgets:?}"
    );

    let heads = |w: &Linear| host.heads(w.forward(x.clone()));
    let (q, k, v) = (heads(&host.wq), heads(&host.wk), heads(&host.wv));
    let (q_lr, k_lr) = host
        .attn
        .predictor()
        .forward(x.clone(), q.clone(), k.clone());
    let reorder = Reorder::new(GRID, policy.query_cube, &device);
    let group = policy.query_cube.iter().product();
    let per_head: Vec<Tensor<4>> = budgets
        .iter()
        .enumerate()
        .map(|(h, &budget)| {
            let head = |t: &Tensor<4>| reorder.apply(t.clone().narrow(1, h, 1));
            let keys = select_critical_keys(
                head(&q_lr).detach(),
                head(&k_lr).detach(),
                SelectionConfig::new(group, budget),
            )
            .unwrap();
            sparse(head(&q), head(&k), head(&v), &keys)
                .map(|out| out.output)
                .unwrap()
        })
        .collect();
    let want = reorder.undo(Tensor::cat(per_head, 1));
    assert_close(got.clone(), want.clone(), 1e-5, "per-head budgets");
    let (grads_got, grads_want) = (got.sum().backward(), want.sum().backward());
    for w in [&host.wq.weight, &host.wk.weight, &host.wv.weight] {
        assert_close(
            w.val().grad(&grads_got).unwrap(),
            w.val().grad(&grads_want).unwrap(),
            1e-4,
            "weight gradient",
        );
    }
}

/// A replica attends exactly as the model does and records nothing; copies share no state
/// (changing one leaves the other); the merged gradients of two half batches are the full
/// batch's.
#[test]
fn replicas_split_a_batch_without_touching_the_schedule() {
    let (host, x) = sparse_host(small_policy().with_sparsity_threshold(0.0).config());
    let before = host.attn.stats();

    let replica = DsvTrainer::replica(&host);
    let half = |i: usize| x.clone().narrow(0, i, 1);
    let on_replica = std::thread::scope(|s| s.spawn(|| replica.forward(half(1))).join().unwrap());
    assert!(
        replica.attn.runs_sparse(GRID.len()),
        "the replica runs the model's stage"
    );
    assert!(!replica.attn.predictor().is_trainable());
    assert_close(
        on_replica.clone().inner(),
        host.forward(half(1)).inner(),
        0.0,
        "replica vs model output",
    );
    let replica_grads =
        DsvTrainer::backward(&replica, replica.forward(half(1)).sum(), DsvTape::new());
    assert_eq!(
        replica_grads.predictor_losses,
        vec![None],
        "a replica records no predictor loss"
    );
    assert!(replica_grads.predictor_gradients().is_empty());

    // Copies share nothing: a training step and a stage change on one leave the others.
    let mut trained = host.clone().profiled(x.clone());
    let mut valid = host.valid();
    valid.attn.set_stage(DsvStage::Dense);
    trained.attn.set_stage(DsvStage::Dense);
    assert_eq!(trained.attn.step(), before.step + 1);
    assert_eq!(
        host.attn.stats(),
        before,
        "the model after changes to its copies"
    );
    assert_eq!(
        replica.attn.stats(),
        before,
        "the replica after changes to its copies"
    );

    // Full batch on the model, against model (first clip) + replica (second clip).
    let tape = DsvTape::new();
    let whole_loss = host.forward_training(x.clone(), &tape).square().mean();
    let whole = DsvTrainer::backward(&host, whole_loss, tape);
    let tape = DsvTape::new();
    let mine_loss = host.forward_training(half(0), &tape).square().mean() * 0.5;
    let mine = DsvTrainer::backward(&host, mine_loss, tape);
    let theirs = std::thread::scope(|s| {
        s.spawn(|| {
            let loss = replica.forward(half(1)).square().mean() * 0.5;
            DsvTrainer::backward(&replica, loss, DsvTape::new())
        })
        .join()
        .unwrap()
    });
    let merged = mine.merge(theirs, &host);
    assert!(
        (merged.loss() - whole.loss()).abs() < 1e-5 * whole.loss().abs().max(1.0),
        "loss {} against {}",
        merged.loss(),
        whole.loss()
    );
    // Plain SGD at rate 1: the update is the gradient itself.
    let update = |grads| {
        let mut opt: ModuleOptimizer = burn::optim::SgdConfig::new().init();
        DsvTrainer::new(1e-2)
            .apply(host.clone(), grads, &mut opt, 1.0)
            .0
    };
    let (a, b) = (update(whole), update(merged));
    for (wa, wb) in [
        (&a.wq.weight, &b.wq.weight),
        (&a.wk.weight, &b.wk.weight),
        (&a.wv.weight, &b.wv.weight),
    ] {
        assert_close(
            wa.val().inner(),
            wb.val().inner(),
            1e-5,
            "host weights after one update",
        );
    }
}
