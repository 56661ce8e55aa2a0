//! Ranks as threads of one process, one per device, passing messages through shared
//! mailboxes.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Device;

use super::{Messenger, PeerError, Tag, timeout_from_env};
use crate::CommError;
use crate::Communicator;

#[derive(Default)]
struct Mailboxes {
    /// Messages by (from, to, tag), in sending order.
    queues: HashMap<(usize, usize, Tag), VecDeque<Vec<u8>>>,
    /// The first rank that failed, and why.
    failed: Option<(usize, String)>,
    /// Ranks whose body has returned.
    finished: Vec<usize>,
}

struct Shared {
    boxes: Mutex<Mailboxes>,
    arrived: Condvar,
}

/// One rank of an in-process job: a thread whose messages go through memory shared with the
/// other ranks' threads.
#[derive(Clone)]
pub struct ThreadMessenger {
    rank: usize,
    world: usize,
    timeout: Duration,
    shared: Arc<Shared>,
}

impl ThreadMessenger {
    /// The `world` ranks of a new job, each waiting at most `timeout` for a message.
    pub fn job(world: usize, timeout: Duration) -> Vec<Self> {
        let shared = Arc::new(Shared {
            boxes: Mutex::new(Mailboxes::default()),
            arrived: Condvar::new(),
        });
        (0..world)
            .map(|rank| Self {
                rank,
                world,
                timeout,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl Messenger for ThreadMessenger {
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
        let mut boxes = self
            .shared
            .boxes
            .lock()
            .map_err(|_| PeerError::Messenger("mailboxes poisoned".into()))?;
        for (to, bytes) in sends {
            boxes
                .queues
                .entry((self.rank, to, tag))
                .or_default()
                .push_back(bytes);
        }
        self.shared.arrived.notify_all();
        let deadline = Instant::now() + self.timeout;
        let mut received = Vec::with_capacity(from.len());
        for &peer in from {
            loop {
                if let Some(message) = boxes
                    .queues
                    .get_mut(&(peer, self.rank, tag))
                    .and_then(VecDeque::pop_front)
                {
                    received.push(message);
                    break;
                }
                if let Some((rank, cause)) = &boxes.failed {
                    return Err(PeerError::Failed {
                        rank: *rank,
                        cause: cause.clone(),
                    });
                }
                // Its sends were queued before it finished, so none is still to come.
                if boxes.finished.contains(&peer) {
                    return Err(PeerError::Finished { rank: peer });
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(PeerError::Timeout {
                        rank: peer,
                        waited: self.timeout,
                    });
                }
                boxes = self
                    .shared
                    .arrived
                    .wait_timeout(boxes, deadline - now)
                    .map_err(|_| PeerError::Messenger("mailboxes poisoned".into()))?
                    .0;
            }
        }
        Ok(received)
    }

    fn fail(&self, cause: &str) {
        if let Ok(mut boxes) = self.shared.boxes.lock() {
            boxes
                .failed
                .get_or_insert_with(|| (self.rank, cause.to_string()));
        }
        self.shared.arrived.notify_all();
    }

    /// Marks this rank finished; the scope that runs the ranks waits for the others.
    fn finish(&self) -> Result<(), PeerError> {
        self.shared
            .boxes
            .lock()
            .map_err(|_| PeerError::Messenger("mailboxes poisoned".into()))?
            .finished
            .push(self.rank);
        self.shared.arrived.notify_all();
        Ok(())
    }
}

/// Runs `body` on one thread per device, each with its rank's [`Communicator`], and returns
/// every rank's result in rank order. A rank whose body returns an error or panics tells the
/// others, whose pending and later collectives then fail with an error naming that rank and
/// its cause, so the job ends instead of hanging. Ranks wait
/// [`timeout_from_env`](super::timeout_from_env) at most for a peer.
pub fn run_in_process<R: Send, E: From<CommError> + std::fmt::Display + Send>(
    devices: &[Device],
    body: impl Fn(Communicator) -> Result<R, E> + Sync,
) -> Vec<Result<R, E>> {
    let messengers = ThreadMessenger::job(devices.len(), timeout_from_env());
    std::thread::scope(|scope| {
        let handles: Vec<_> = messengers
            .into_iter()
            .zip(devices)
            .map(|(messenger, device)| {
                let body = &body;
                scope.spawn(move || {
                    let comm = Communicator::new(Arc::new(messenger.clone()), device.clone());
                    let result = match catch_unwind(AssertUnwindSafe(|| body(comm))) {
                        Ok(result) => result,
                        Err(panic) => Err(E::from(CommError::Peer {
                            function: "run_in_process",
                            rank: messenger.rank,
                            cause: format!("its body panicked: {}", panic_message(&*panic)),
                        })),
                    };
                    match &result {
                        // Fails only on poisoned mailboxes, which every peer then reports.
                        Ok(_) => drop(messenger.finish()),
                        Err(e) => messenger.fail(&e.to_string()),
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank threads catch their panics"))
            .collect()
    })
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
