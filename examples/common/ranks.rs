//! The examples' `--transport`: the ranks of a group as threads of this process or as the
//! processes of an MPI job (include with `#[path]`).

use burn::tensor::Device;
use burn_sparse_video::ctx_parallel::Communicator;
use burn_sparse_video::dit::DitError;

/// What carries the messages between ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// `--ranks` threads of this process, on one device.
    Threads,
    /// One rank per process of an MPI job (`mpirun -np N …`; needs `--features mpi`).
    Mpi,
}

/// Runs `body` on every rank and returns rank 0's result: `None` on the other ranks of an
/// MPI job, which leave the reporting to rank 0. A failing MPI rank aborts the whole job
/// with its message; a failing thread makes this return the first error.
pub fn on_ranks<R: Send>(
    transport: Transport,
    threads: usize,
    device: &Device,
    body: impl Fn(Communicator) -> Result<R, DitError> + Sync,
) -> Result<Option<R>, String> {
    match transport {
        Transport::Threads => {
            let mut results = burn_sparse_video::ctx_parallel::transport::run_in_process(
                &vec![device.clone(); threads.max(1)],
                body,
            );
            if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                return Err(e.to_string());
            }
            Ok(Some(results.remove(0).expect("checked")))
        }
        Transport::Mpi => run_mpi(device, body),
    }
}

#[cfg(feature = "mpi")]
fn run_mpi<R>(
    device: &Device,
    body: impl Fn(Communicator) -> Result<R, DitError>,
) -> Result<Option<R>, String> {
    burn_sparse_video::ctx_parallel::transport::run_mpi(device.clone(), |comm| {
        let lead = comm.rank() == 0;
        body(comm).map(|r| lead.then_some(r))
    })
    .map_err(|e| e.to_string())
}

#[cfg(not(feature = "mpi"))]
fn run_mpi<R>(
    _: &Device,
    _: impl Fn(Communicator) -> Result<R, DitError>,
) -> Result<Option<R>, String> {
    Err("--transport mpi needs a build with `--features mpi`".into())
}
