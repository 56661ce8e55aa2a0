//! The SPMD cases with ranks as processes: this test binary runs itself under
//! `mpirun --oversubscribe -np N` for N = 2, 3 and 4, each process one rank on Flex, and the
//! failure cases end the job with a named error within a time limit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};
use burn_ctx_parallel::head_parallel_attention;
use burn_ctx_parallel::transport::run_mpi;

use burn_ctx_parallel::CommError;

use crate::spmd_cases::{normal, run_case};

/// What one `mpirun` printed and how it ended.
struct Job {
    success: bool,
    output: String,
    took: Duration,
}

/// Runs `mpi_rank` with `case` on `np` processes, killed after `limit`.
fn mpirun(np: usize, case: &str, limit: Duration) -> Job {
    let exe = std::env::current_exe().expect("the test binary");
    let started = Instant::now();
    let mut child = Command::new("mpirun")
        .args([
            "--oversubscribe",
            "--allow-run-as-root",
            "--bind-to",
            "none",
            "-np",
            &np.to_string(),
        ])
        .args([
            "-x",
            "CTX_PARALLEL_CASE",
            "-x",
            "CTX_PARALLEL_TIMEOUT_S",
            "-x",
            "RAYON_NUM_THREADS",
            "-x",
            "OMPI_MCA_btl_vader_single_copy_mechanism",
        ])
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "mpi::mpi_rank",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CTX_PARALLEL_CASE", case)
        .env("CTX_PARALLEL_TIMEOUT_S", "10")
        .env("RAYON_NUM_THREADS", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun (OpenMPI: scripts/setup.sh --mpi installs it)");
    loop {
        if child.try_wait().expect("waiting for mpirun").is_some() {
            break;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().expect("mpirun output");
            panic!(
                "mpirun -np {np} {case} still running after {limit:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("mpirun output");
    Job {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        took: started.elapsed(),
    }
}

/// One rank of a job started by the tests below (ignored when run directly).
#[test]
#[ignore = "a rank of the mpirun jobs below"]
fn mpi_rank() {
    let case = std::env::var("CTX_PARALLEL_CASE").expect("CTX_PARALLEL_CASE");
    run_mpi(Device::flex(), |comm| {
        let fail = |why: String| burn_sparse_attn::SparseAttnError {
            function: "mpi_rank",
            argument: "case",
            expected: "to pass".into(),
            actual: why,
        };
        match case.as_str() {
            name if name.starts_with("case:") => {
                let name = &name["case:".len()..];
                let worst = run_case(name, &comm).map_err(fail)?;
                println!(
                    "rank {} of {}: {name} worst relative difference {worst:.3e}",
                    comm.rank(),
                    comm.world()
                );
            }
            "mismatch" => {
                let width = if comm.rank() == 1 { 5 } else { 4 };
                comm.all_gather(normal([2, width], 1, comm.device()), 0)?;
            }
            "panic" => {
                if comm.rank() == 1 {
                    panic!("injected failure");
                }
                comm.all_reduce(normal::<2>([2, 2], 1, comm.device()))?;
            }
            "hang" => {
                if comm.rank() == 1 {
                    std::thread::sleep(Duration::from_secs(60));
                }
                comm.all_reduce(normal::<2>([2, 2], 1, comm.device()))?;
            }
            "early_finish" => {
                comm.all_reduce(normal::<2>([2, 2], 1, comm.device()))?;
                if comm.rank() == 1 {
                    comm.all_reduce(normal::<2>([2, 2], 1, comm.device()))?;
                }
            }
            "heads" => {
                let x: Tensor<4> = normal([1, comm.world() + 1, 4, 4], 1, comm.device());
                head_parallel_attention(&comm, x.clone(), x.clone(), x, |q, _, _| {
                    Ok::<_, CommError>(q)
                })?;
            }
            other => return Err(fail(format!("unknown case {other}"))),
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("MPI: {e}"));
}

/// Case `case` across 2, 3 and 4 processes equals the unsharded computation on every rank.
fn equals_unsharded_across_processes(case: &str) {
    for np in [2, 3, 4] {
        let job = mpirun(np, &format!("case:{case}"), Duration::from_secs(600));
        assert!(job.success, "{case}, mpirun -np {np}:\n{}", job.output);
        let marker = format!(" {case} worst relative difference ");
        let worst: Vec<f64> = job
            .output
            .lines()
            .filter(|l| l.contains(&marker))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        assert_eq!(
            worst.len(),
            np,
            "every rank reports {case}:\n{}",
            job.output
        );
        println!(
            "{case}, mpirun -np {np}: worst relative difference {:.3e} in {:.1} s",
            worst.iter().copied().fold(0.0, f64::max),
            job.took.as_secs_f64()
        );
    }
}

/// One test per SPMD case, so that one failing case hides no other.
mod case_across_processes {
    macro_rules! tests {
        ($($case:ident),*) => {
            $(
                #[test]
                fn $case() {
                    super::equals_unsharded_across_processes(stringify!($case));
                }
            )*
        };
    }
    crate::spmd_cases::for_each_case!(tests);
}

#[test]
fn failures_end_the_job_with_the_rank_and_cause() {
    let limit = Duration::from_secs(120);
    // Ranks that disagree: every rank names the disagreement.
    let job = mpirun(3, "mismatch", limit);
    assert!(!job.success);
    for rank in 0..3 {
        assert!(
            job.output.contains(&format!(
                "rank {rank} failed: Communicator::all_gather: `x` must be the same on every rank"
            )),
            "rank {rank}:\n{}",
            job.output
        );
    }
    // Heads that don't divide the world: every rank names the argument.
    let job = mpirun(2, "heads", limit);
    assert!(!job.success);
    for rank in 0..2 {
        assert!(job.output.contains(&format!("rank {rank} failed: head_parallel_attention: `q` must be a head count divisible by the world size 2")), "rank {rank}:\n{}", job.output);
    }
    // A rank that panics stops the job with its message.
    let job = mpirun(4, "panic", limit);
    assert!(!job.success);
    assert!(
        job.output
            .contains("rank 1 failed: panicked: injected failure"),
        "{}",
        job.output
    );
    // A rank that hangs: its peers give up after the 10 s timeout, naming it.
    let job = mpirun(2, "hang", limit);
    assert!(!job.success);
    assert!(
        job.output.contains("no message from rank 1 within 10.0 s"),
        "{}",
        job.output
    );
    assert!(job.took < Duration::from_secs(50), "{:?}", job.took);
    // A rank that finishes while a peer still waits for it: the job ends at once, naming it,
    // not by the peer's 10 s timeout.
    let job = mpirun(2, "early_finish", limit);
    assert!(!job.success);
    assert!(
        job.output.contains(
            "rank 1: aborting the MPI job: rank 0 finished its work while this rank waits"
        ) && !job.output.contains("within 10.0 s"),
        "{}",
        job.output
    );
    assert!(job.took < Duration::from_secs(50), "{:?}", job.took);
}
