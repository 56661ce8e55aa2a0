//! The SPMD cases with ranks as threads of this process, worlds 1 to 4, and what happens when
//! ranks disagree or fail.

use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};
use burn_ctx_parallel::CommError;
use burn_ctx_parallel::transport::run_in_process;

use crate::spmd_cases::{normal, run_case};

fn devices(world: usize) -> Vec<Device> {
    vec![Device::flex(); world]
}

/// Case `case` on 1 to 4 ranks as threads equals the unsharded computation on every rank.
fn equals_unsharded_on_threads(case: &str) {
    let mut worst_seen = 0.0f64;
    for world in 1..=4 {
        let results = run_in_process(&devices(world), |comm| {
            Ok::<_, CommError>(run_case(case, &comm))
        });
        for (rank, result) in results.into_iter().enumerate() {
            let worst = result
                .unwrap()
                .unwrap_or_else(|e| panic!("{case}, world {world}, rank {rank}: {e}"));
            assert!(worst <= 1e-5, "{case}, world {world}: {worst}");
            worst_seen = worst_seen.max(worst);
        }
    }
    println!("{case} on threads, worlds 1-4: worst relative difference {worst_seen:.3e}");
}

/// One test per SPMD case, so that one failing case hides no other.
mod case_on_threads {
    macro_rules! tests {
        ($($case:ident),*) => {
            $(
                #[test]
                fn $case() {
                    super::equals_unsharded_on_threads(stringify!($case));
                }
            )*
        };
    }
    crate::spmd_cases::for_each_case!(tests);
}

#[test]
fn ranks_that_disagree_get_a_named_error_on_every_rank() {
    // Rank 1 gathers a tensor of another width.
    let results = run_in_process(&devices(3), |comm| {
        let width = if comm.rank() == 1 { 5 } else { 4 };
        comm.all_gather(normal([2, width], 1, comm.device()), 0)
    });
    for (rank, result) in results.into_iter().enumerate() {
        let err = result.unwrap_err();
        assert_eq!(err.argument(), "x", "rank {rank}: {err}");
        assert!(
            err.to_string().contains("[*, 5]") && err.to_string().contains("[*, 4]"),
            "rank {rank}: {err}"
        );
    }
    // Different splits of an all-to-all.
    let results = run_in_process(&devices(2), |comm| {
        let sizes = if comm.rank() == 0 { [1, 3] } else { [2, 2] };
        comm.all_to_all(normal([4, 2], 1, comm.device()), 0, &sizes, 1)
    });
    assert!(
        results.iter().all(|r| r
            .as_ref()
            .is_err_and(|e| e.to_string().contains("split 0 by"))),
        "{:?}",
        results
            .iter()
            .map(|r| r.as_ref().err().map(ToString::to_string))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_failing_rank_ends_the_job_with_its_cause_on_every_rank() {
    for panics in [false, true] {
        let started = Instant::now();
        let results = run_in_process(&devices(3), |comm| -> Result<_, CommError> {
            if comm.rank() == 2 {
                if panics {
                    panic!("injected failure");
                }
                return Err(burn_sparse_attn::SparseAttnError::check(
                    false,
                    "test",
                    "input",
                    "valid",
                    "injected failure",
                )
                .unwrap_err()
                .into());
            }
            let x: Tensor<2> = normal([2, 2], 1, comm.device());
            comm.all_reduce(x)
        });
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job took {:?}",
            started.elapsed()
        );
        for (rank, result) in results.into_iter().enumerate() {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("injected failure"), "rank {rank}: {err}");
            if rank != 2 {
                assert!(err.contains("rank 2 failed"), "rank {rank}: {err}");
            }
        }
    }
}

#[test]
fn a_rank_that_finishes_early_does_not_leave_a_peer_waiting() {
    // Rank 0 is done after one collective, rank 1 calls a second: rank 1 must hear at once
    // that rank 0 has finished, not wait out the timeout (300 s unless set).
    let started = Instant::now();
    let results = run_in_process(&devices(2), |comm| -> Result<_, CommError> {
        let x: Tensor<2> = normal([2, 2], 1, comm.device());
        comm.all_reduce(x.clone())?;
        if comm.rank() == 1 {
            comm.all_reduce(x)?;
        }
        Ok(())
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the job took {:?}",
        started.elapsed()
    );
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("rank 0 finished its work while this rank waits"),
        "{err}"
    );
}
