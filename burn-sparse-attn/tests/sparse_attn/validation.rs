use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_sparse_attn::{
    CriticalKeys, SelectionConfig, SparseAttnError, dense_attention_with_search,
    select_critical_keys, sparse_attention,
};
use burn_sparse_attn::{IndexShape, SparseAttentionOptions};

fn expect_err<T: std::fmt::Debug>(
    result: Result<T, SparseAttnError>,
    function: &str,
    argument: &str,
) -> SparseAttnError {
    let err = result.expect_err(&format!("{function} should reject `{argument}`"));
    assert_eq!(
        (err.function, err.argument),
        (function, argument),
        "wrong argument named: {err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(argument) && message.contains("must be"),
        "unclear message: {message}"
    );
    err
}

fn zeros(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::zeros(shape, device)
}

#[test]
fn selection_rejects_bad_arguments() {
    let device = Device::flex();
    let q = zeros([1, 2, 10, 4], &device);
    let k = zeros([1, 2, 10, 4], &device);
    let select =
        |q: &Tensor<4>, k: &Tensor<4>, config| select_critical_keys(q.clone(), k.clone(), config);
    const F: &str = "select_critical_keys";

    let err = expect_err(
        select(&q, &k, SelectionConfig::new(4, 0)),
        F,
        "config.budget",
    );
    assert_eq!(err.actual, "0");
    let err = expect_err(
        select(&q, &k, SelectionConfig::new(4, 11)),
        F,
        "config.budget",
    );
    assert!(err.expected.contains("1..=10"), "{err}");
    // With blocks of 4 there are only 3 units.
    expect_err(
        select(&q, &k, SelectionConfig::new(4, 4).with_key_block(4)),
        F,
        "config.budget",
    );
    expect_err(
        select(&q, &k, SelectionConfig::new(0, 2)),
        F,
        "config.group_size",
    );
    expect_err(
        select(&q, &k, SelectionConfig::new(4, 2).with_key_block(0)),
        F,
        "config.key_block",
    );
    expect_err(
        select(
            &q,
            &zeros([1, 3, 10, 4], &device),
            SelectionConfig::new(4, 2),
        ),
        F,
        "k_lr",
    );
    expect_err(
        select(
            &q,
            &zeros([1, 2, 10, 5], &device),
            SelectionConfig::new(4, 2),
        ),
        F,
        "k_lr",
    );
    expect_err(
        select(
            &zeros([1, 2, 0, 4], &device),
            &k,
            SelectionConfig::new(4, 2),
        ),
        F,
        "q_lr",
    );
    expect_err(
        select(&q, &k.clone().cast(DType::F16), SelectionConfig::new(4, 2)),
        F,
        "k_lr",
    );
}

#[test]
fn attention_rejects_bad_arguments() {
    let device = Device::flex();
    let (q, k, v) = (
        zeros([2, 2, 12, 8], &device),
        zeros([2, 2, 12, 8], &device),
        zeros([2, 2, 12, 8], &device),
    );
    let keys = select_critical_keys(q.clone(), k.clone(), SelectionConfig::new(4, 3)).unwrap();
    const F: &str = "sparse_attention";
    let call = |q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, keys: &CriticalKeys, scale| {
        sparse_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            keys,
            None,
            SparseAttentionOptions {
                scale,
                ..SparseAttentionOptions::default()
            },
        )
        .map(|out| out.output)
    };

    assert!(call(&q, &k, &v, &keys, None).is_ok());
    expect_err(
        call(&q, &zeros([2, 2, 12, 16], &device), &v, &keys, None),
        F,
        "k",
    );
    expect_err(
        call(&q, &zeros([1, 2, 12, 8], &device), &v, &keys, None),
        F,
        "k",
    );
    expect_err(
        call(&q, &k, &zeros([2, 2, 11, 8], &device), &keys, None),
        F,
        "v",
    );
    expect_err(
        call(&q, &k, &v.clone().cast(DType::F16), &keys, None),
        F,
        "v",
    );
    expect_err(call(&q, &k, &v, &keys, Some(0.0)), F, "scale");
    expect_err(call(&q, &k, &v, &keys, Some(f64::NAN)), F, "scale");
    // An index made for other shapes.
    let short = zeros([2, 2, 8, 8], &device);
    let other_len =
        select_critical_keys(short.clone(), short.clone(), SelectionConfig::new(4, 3)).unwrap();
    let err = expect_err(call(&q, &k, &v, &other_len, None), F, "keys");
    assert!(err.expected.contains("12 queries"), "{err}");
    let one_head = zeros([2, 1, 12, 8], &device);
    let other_heads =
        select_critical_keys(one_head.clone(), one_head, SelectionConfig::new(4, 3)).unwrap();
    expect_err(call(&q, &k, &v, &other_heads, None), F, "keys");
    let biased = |bias: Tensor<4>| {
        sparse_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            &keys,
            Some(bias),
            SparseAttentionOptions::default(),
        )
    };
    assert!(biased(zeros([2, 1, 1, 12], &device)).is_ok());
    for shape in [[1, 1, 1, 12], [2, 2, 1, 12], [2, 1, 12, 12], [2, 1, 1, 11]] {
        let err = expect_err(
            biased(zeros(shape, &device)),
            "sparse_attention",
            "attn_bias",
        );
        assert!(err.expected.contains("[2, 1, 1, 12]"), "{err}");
    }
}

#[test]
fn search_rejects_bad_arguments() {
    let device = Device::flex();
    let q = zeros([1, 2, 12, 8], &device);
    const F: &str = "dense_attention_with_search";
    let call = |k: Tensor<4>, config, scale| {
        dense_attention_with_search(q.clone(), k.clone(), k, None, config, scale)
    };
    assert!(call(q.clone(), SelectionConfig::new(4, 12), None).is_ok());
    expect_err(
        call(
            zeros([1, 2, 12, 4], &device),
            SelectionConfig::new(4, 3),
            None,
        ),
        F,
        "k",
    );
    expect_err(
        call(q.clone(), SelectionConfig::new(4, 0), None),
        F,
        "config.budget",
    );
    let err = expect_err(
        call(q.clone(), SelectionConfig::new(4, 13), None),
        F,
        "config.budget",
    );
    assert!(err.expected.contains("1..=12"), "{err}");
    expect_err(
        call(
            q.clone(),
            SelectionConfig::new(4, 4).with_key_block(4),
            None,
        ),
        F,
        "config.budget",
    );
    expect_err(
        call(q.clone(), SelectionConfig::new(0, 3), None),
        F,
        "config.group_size",
    );
    expect_err(
        call(q.clone(), SelectionConfig::new(4, 3), Some(-1.0)),
        F,
        "scale",
    );
    let biased = |bias: Tensor<4>| {
        dense_attention_with_search(
            q.clone(),
            q.clone(),
            q.clone(),
            Some(bias),
            SelectionConfig::new(4, 3),
            None,
        )
    };
    let err = expect_err(biased(zeros([1, 2, 12, 11], &device)), F, "bias");
    assert!(err.expected.contains("[1 or 1, 2 or 1, 12, 12]"), "{err}");
    expect_err(biased(zeros([2, 1, 12, 12], &device)), F, "bias");
    // Rows 0 and 1 of the first group see disjoint keys: the group shares none.
    let mut hidden = vec![0.0f32; 12 * 12];
    for j in 0..12 {
        hidden[if j < 6 { j } else { 12 + j }] = f32::NEG_INFINITY;
    }
    let bias = Tensor::<4>::from_data(TensorData::new(hidden, [1, 1, 12, 12]), &device);
    let err = expect_err(biased(bias), F, "bias");
    assert!(err.expected.contains("at least one key unit"), "{err}");
}

#[test]
fn user_indices_are_checked() {
    let device = Device::flex();
    let index = |ids: Vec<i64>, groups: usize, k: usize| {
        Tensor::<4, Int>::from_data(TensorData::new(ids, [1, 1, groups, k]), &device)
    };
    const F: &str = "CriticalKeys::new";
    // 10 queries in groups of 4 → 3 groups; 10 keys.
    assert!(
        CriticalKeys::new(
            index(vec![0, 9, 1, 2, 3, 4], 3, 2),
            IndexShape {
                group_size: 4,
                key_block: 1,
                query_len: 10,
                key_len: 10
            }
        )
        .is_ok()
    );
    let err = expect_err(
        CriticalKeys::new(
            index(vec![0, 10, 1, 2, 3, 4], 3, 2),
            IndexShape {
                group_size: 4,
                key_block: 1,
                query_len: 10,
                key_len: 10,
            },
        ),
        F,
        "indices",
    );
    assert!(err.actual.contains("row 0"), "{err}");
    expect_err(
        CriticalKeys::new(
            index(vec![0, 1, 2, 2, 3, 4], 3, 2),
            IndexShape {
                group_size: 4,
                key_block: 1,
                query_len: 10,
                key_len: 10,
            },
        ),
        F,
        "indices",
    );
    expect_err(
        CriticalKeys::new(
            index(vec![0, 1, 3, 2, 3, 4], 3, 2),
            IndexShape {
                group_size: 4,
                key_block: 1,
                query_len: 10,
                key_len: 10,
            },
        ),
        F,
        "indices",
    );
    expect_err(
        CriticalKeys::new(
            index(vec![-1, 1, 2, 3, 3, 4], 3, 2),
            IndexShape {
                group_size: 4,
                key_block: 1,
                query_len: 10,
                key_len: 10,
            },
        ),
        F,
        "indices",
    );
    expect_err(
        CriticalKeys::new(
            index(vec![0, 1, 2, 3], 2, 2),
            IndexShape {
                group_size: 4,
                key_block: 1,
                query_len: 10,
                key_len: 10,
            },
        ),
        F,
        "indices",
    );
    // Blocks of 4 over 10 keys: units 0..3 only.
    expect_err(
        CriticalKeys::new(
            index(vec![0, 3, 1, 2, 0, 1], 3, 2),
            IndexShape {
                group_size: 4,
                key_block: 4,
                query_len: 10,
                key_len: 10,
            },
        ),
        F,
        "indices",
    );
    expect_err(
        CriticalKeys::new(
            index(vec![0, 1, 1, 2, 0, 1], 3, 2),
            IndexShape {
                group_size: 0,
                key_block: 4,
                query_len: 10,
                key_len: 10,
            },
        ),
        F,
        "shape.group_size",
    );
}
