//! Ranks as the processes of an MPI job (`mpirun -np N` or `srun` start the same program on
//! every rank): point-to-point messages over MPI with non-blocking sends and probed
//! receives, so a lost peer is noticed within the timeout.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use mpi::Threading;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::request::scope;
use mpi::topology::{Communicator as _, SimpleCommunicator};

use super::threads::panic_message;
use super::{Messenger, PeerError, Tag, timeout_from_env};
use crate::Communicator;

/// MPI's own state; MPI is finalised when the last messenger using it is dropped.
struct Mpi {
    _universe: Universe,
    world: SimpleCommunicator,
}

/// This process's rank of an MPI job.
pub struct MpiMessenger {
    mpi: Mutex<Mpi>,
    rank: usize,
    world: usize,
    timeout: Duration,
    /// How long a failing rank waits before it aborts the job, so that peers that found the
    /// same error (a disagreement all ranks see) can print theirs.
    grace: Duration,
}

// SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED and every call goes through the
// mutex, so MPI is never entered by two threads at once.
unsafe impl Send for MpiMessenger {}
unsafe impl Sync for MpiMessenger {}

/// The MPI job this process belongs to.
pub struct MpiUniverse;

impl MpiUniverse {
    /// Initialises MPI (once per process) and returns this rank's messenger, waiting
    /// [`timeout_from_env`] at most for a peer.
    pub fn init() -> Result<Arc<MpiMessenger>, PeerError> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                PeerError::Messenger("MPI was already initialised in this process".into())
            })?;
        if threading < Threading::Serialized {
            return Err(PeerError::Messenger(format!(
                "the MPI library offers {threading:?} threading; at least Serialized is needed"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Arc::new(MpiMessenger {
            mpi: Mutex::new(Mpi {
                _universe: universe,
                world,
            }),
            rank,
            world: size,
            timeout: timeout_from_env(),
            grace: Duration::from_secs(1),
        }))
    }
}

/// MPI guarantees tags up to 32767: 3 bits of group, 1 of direction, 10 of sequence, and one
/// tag above them for [`FINISHED`]. Messages between two ranks are matched in sending order,
/// and both ranks run their collectives in the same order, so tags that wrap or collide still
/// pair the right messages.
fn mpi_tag(tag: Tag) -> i32 {
    (((tag.group & 0x7) << 11) | ((tag.backward as u64) << 10) | (tag.seq & 0x3FF)) as i32
}

/// The tag of the message a rank sends every peer when its work is done.
const FINISHED: i32 = 0x4000;

impl Messenger for MpiMessenger {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn exchange(
        &self,
        tag: Tag,
        sends: Vec<(usize, Vec<u8>)>,
        from: &[usize],
    ) -> Result<Vec<Vec<u8>>, PeerError> {
        let mpi = self
            .mpi
            .lock()
            .map_err(|_| PeerError::Messenger("MPI messenger poisoned".into()))?;
        let world = &mpi.world;
        let tag = mpi_tag(tag);
        let deadline = Instant::now() + self.timeout;
        scope(|scope| {
            let mut pending: Vec<_> = sends
                .iter()
                .map(|(to, bytes)| {
                    world.process_at_rank(*to as i32).immediate_send_with_tag(
                        scope,
                        &bytes[..],
                        tag,
                    )
                })
                .collect();
            let mut received: Vec<Option<Vec<u8>>> = vec![None; from.len()];
            loop {
                let mut progress = false;
                let mut gone = None;
                for (slot, &peer) in received.iter_mut().zip(from) {
                    if slot.is_some() {
                        continue;
                    }
                    let source = world.process_at_rank(peer as i32);
                    let finished = source.immediate_probe_with_tag(FINISHED).is_some();
                    // Messages from one rank are matched in sending order: once its
                    // FINISHED is seen, whatever it sent before has arrived too.
                    if let Some(probed) = source.immediate_matched_probe_with_tag(tag) {
                        *slot = Some(probed.matched_receive_vec::<u8>().0);
                        progress = true;
                    } else if finished {
                        gone = Some(peer);
                    }
                }
                pending = pending
                    .into_iter()
                    .filter_map(|request| request.test().err())
                    .collect();
                if pending.is_empty() && received.iter().all(Option::is_some) {
                    return Ok(received
                        .into_iter()
                        .map(|m| m.expect("all received"))
                        .collect());
                }
                if let Some(rank) = gone {
                    // Pending sends cannot be abandoned safely: stop the job here.
                    let why = PeerError::Finished { rank };
                    say(&format!("rank {}: aborting the MPI job: {why}", self.rank));
                    world.abort(1);
                }
                if Instant::now() >= deadline {
                    // As above.
                    let waiting = from
                        .iter()
                        .zip(&received)
                        .find(|(_, m)| m.is_none())
                        .map(|(p, _)| *p);
                    let why = match waiting {
                        Some(rank) => PeerError::Timeout {
                            rank,
                            waited: self.timeout,
                        }
                        .to_string(),
                        None => format!(
                            "sends not taken by their receivers within {:.1} s",
                            self.timeout.as_secs_f64()
                        ),
                    };
                    say(&format!("rank {}: aborting the MPI job: {why}", self.rank));
                    world.abort(1);
                }
                if !progress {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
        })
    }

    fn finish(&self) -> Result<(), PeerError> {
        let mpi = self
            .mpi
            .lock()
            .map_err(|_| PeerError::Messenger("MPI messenger poisoned".into()))?;
        let world = &mpi.world;
        let peers: Vec<i32> = (0..self.world as i32)
            .filter(|&r| r != self.rank as i32)
            .collect();
        let note = [1u8];
        scope(|scope| {
            let mut pending: Vec<_> = peers
                .iter()
                .map(|&to| {
                    world
                        .process_at_rank(to)
                        .immediate_send_with_tag(scope, &note[..], FINISHED)
                })
                .collect();
            // No deadline: a peer still working (rank 0 writing a report) is waited for, and a
            // peer that waits for this rank receives FINISHED and aborts the job.
            let mut done = vec![false; peers.len()];
            while !(pending.is_empty() && done.iter().all(|&d| d)) {
                for (done, &peer) in done.iter_mut().zip(&peers) {
                    let source = world.process_at_rank(peer);
                    if !*done
                        && let Some(probed) = source.immediate_matched_probe_with_tag(FINISHED)
                    {
                        probed.matched_receive_vec::<u8>();
                        *done = true;
                        // Anything else it sent arrived before its FINISHED.
                        if let Some(status) = source.immediate_probe() {
                            say(&format!(
                                "rank {}: aborting the MPI job: rank {peer} finished with a \
                                 message (tag {}) that this rank never received (the ranks ran \
                                 different collectives)",
                                self.rank,
                                status.tag()
                            ));
                            world.abort(1);
                        }
                    }
                }
                pending = pending
                    .into_iter()
                    .filter_map(|request| request.test().err())
                    .collect();
                // Waiting ranks may share the cores of the one still working.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    }

    fn fail(&self, cause: &str) {
        say(&format!("rank {} failed: {cause}", self.rank));
        std::thread::sleep(self.grace);
        match self.mpi.lock() {
            Ok(mpi) => mpi.world.abort(1),
            Err(poisoned) => poisoned.into_inner().world.abort(1),
        }
    }
}

/// Prints one line to stderr in a single write, so that lines of ranks whose output
/// `mpirun` merges do not interleave mid-line.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Runs `body` as this process's rank of an MPI job on `device` and returns its result. A
/// rank whose body returns an error or panics prints the rank and the cause and aborts the
/// whole job (exit code 1 from `mpirun`), so no rank waits for it.
pub fn run_mpi<R, E: std::fmt::Display>(
    device: Device,
    body: impl FnOnce(Communicator) -> Result<R, E>,
) -> Result<R, PeerError> {
    let messenger = MpiUniverse::init()?;
    let comm = Communicator::new(messenger.clone(), device);
    let result = match catch_unwind(AssertUnwindSafe(|| body(comm))) {
        Ok(Ok(value)) => match messenger.finish() {
            Ok(()) => return Ok(value),
            Err(e) => e.to_string(),
        },
        Ok(Err(e)) => e.to_string(),
        Err(panic) => format!("panicked: {}", panic_message(&*panic)),
    };
    messenger.fail(&result);
    unreachable!("fail aborts the job")
}
