//! The precompute worker: one thread that builds the tables `core::precompute` asks for, off
//! the event loop, the newest request per VIP, the chain due first first. One thread, not a blocking task per
//! publish: 500 backends coming up at once spawned ~400 threads, each with its own malloc
//! arena (800 MiB resident) and starved the loop of both cores (verdict p99 5 s).
use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex},
};

use tokio::sync::mpsc;

use crate::core::{
    layout::TableRegion,
    plan::{self, VipPlan},
    precompute::{SlotDiff, Step, Weights},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The predicted verdicts' tables, one step after another (urgent: due at the next probe).
    Chain,
    /// The first two predicted verdicts in the other order (`precompute::swapped_pair`),
    /// one step after the other.
    Swap,
    /// The table without each live backend, each a step from `from`.
    Singles,
}

pub struct Job {
    pub vip: usize,
    pub kind: Kind,
    /// When the verdict of the first target is expected (chains): the worker takes the most
    /// urgent chain first. By VIP position instead, the last VIPs' chains of a ramp-up of 50
    /// waited behind the first ones' ever-renewed chains past their verdicts, which were
    /// then built on the loop (a millisecond each).
    pub due: Option<std::time::Instant>,
    pub plan: VipPlan,
    pub seed: u32,
    pub from: Weights,
    pub targets: Vec<Weights>,
}

/// A finished job: its steps, and what it was computed for (a reload in between makes the
/// steps useless: the VIP position may name another VIP, its backends other indices).
pub struct Done {
    pub vip: usize,
    pub kind: Kind,
    pub region: TableRegion,
    pub indices: Vec<u32>,
    pub from: Weights,
    pub steps: Vec<Step>,
}

impl Done {
    pub fn still_for(&self, vip: &VipPlan) -> bool {
        vip.region == self.region
            && vip
                .backends
                .iter()
                .map(|b| b.index)
                .eq(self.indices.iter().copied())
    }
}

#[derive(Default)]
struct Queue {
    /// Pending jobs by (kind, VIP): a newer job replaces the older (see [`Queue::next`]).
    jobs: BTreeMap<(Kind, usize), Job>,
    /// Steps the loop is done with, freed here (`Worker::discard`).
    garbage: Vec<Step>,
    stop: bool,
}

impl Queue {
    /// Takes the next job: chains before singles, the one due first first.
    fn next(&mut self) -> Option<Job> {
        let key = (self.jobs.iter())
            .min_by_key(|(&(kind, vip), job)| (kind, job.due, vip))
            .map(|(&key, _)| key)?;
        self.jobs.remove(&key)
    }
}

pub struct Worker {
    shared: Arc<(Mutex<Queue>, Condvar)>,
}

impl Worker {
    /// `lower`: at nice 10, when the event loop is not real-time (see [`lower_priority`]).
    pub fn spawn(tx: mpsc::Sender<Done>, lower: bool) -> Self {
        let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("vipd-precompute".into())
            .spawn(move || {
                if lower {
                    lower_priority();
                }
                work(&theirs, &tx)
            })
            .expect("spawn the precompute thread");
        Self { shared }
    }

    pub fn submit(&self, job: Job) {
        let (queue, ready) = &*self.shared;
        let mut q = queue.lock().expect("precompute queue");
        let replaced = q.jobs.insert((job.kind, job.vip), job);
        drop(q);
        ready.notify_one();
        drop(replaced);
    }

    /// Frees steps on this thread, which allocated them: freed on the loop, a ramp-up's
    /// tables of diffs cost it up to hundreds of microseconds (glibc returning memory,
    /// another thread's arena), verdicts waiting.
    pub fn discard(&self, steps: Vec<Step>) {
        if steps.is_empty() {
            return;
        }
        let (queue, ready) = &*self.shared;
        let mut q = queue.lock().expect("precompute queue");
        q.garbage.extend(steps);
        drop(q);
        ready.notify_one();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let (queue, ready) = &*self.shared;
        if let Ok(mut q) = queue.lock() {
            q.stop = true;
            q.jobs.clear();
        }
        ready.notify_one();
    }
}

/// Nice 10 for the calling thread (Linux: per thread): precomputing must never delay the
/// event loop's verdicts, which it otherwise shares two cores with.
pub fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, "could not lower a helper thread's priority");
    }
}

/// How long the worker is idle before it gives freed memory back.
const TRIM_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Returns the heap's free pages to the kernel (glibc `malloc_trim`). The builds free a few
/// 256 KiB tables each; glibc keeps freed heap memory resident for reuse, which after a
/// ramp-up of 500 verdicts was a third of vipd's resident memory.
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn work(shared: &(Mutex<Queue>, Condvar), tx: &mpsc::Sender<Done>) {
    let (queue, ready) = shared;
    loop {
        let job = {
            let mut q = queue.lock().expect("precompute queue");
            loop {
                if q.stop {
                    return;
                }
                if !q.garbage.is_empty() {
                    let garbage = std::mem::take(&mut q.garbage);
                    drop(q);
                    drop(garbage);
                    q = queue.lock().expect("precompute queue");
                    continue;
                }
                if let Some(job) = q.next() {
                    break job;
                }
                // Memory goes back once a burst is over (`TRIM_AFTER` without work): trimming
                // locks every malloc arena, the loop's too, and the pages it gives back fault
                // in again at the next allocation.
                let (guard, waited) = ready.wait_timeout(q, TRIM_AFTER).expect("precompute queue");
                q = guard;
                if waited.timed_out() && q.jobs.is_empty() && q.garbage.is_empty() {
                    drop(q);
                    give_back_freed_memory();
                    q = queue.lock().expect("precompute queue");
                    q = ready
                        .wait_while(q, |q| !q.stop && q.jobs.is_empty() && q.garbage.is_empty())
                        .expect("precompute queue");
                }
            }
        };
        // Stop when a newer job replaces this one; singles also give way to any chain (a
        // verdict is due at its next probe) and go back in the queue.
        let interrupt = || {
            let Ok(q) = queue.lock() else {
                return Some(Interrupt::Superseded);
            };
            if q.stop || q.jobs.contains_key(&(job.kind, job.vip)) {
                Some(Interrupt::Superseded)
            } else if job.kind != Kind::Chain && q.jobs.keys().any(|k| k.0 == Kind::Chain) {
                Some(Interrupt::Yield)
            } else {
                None
            }
        };
        match run(&job, interrupt) {
            Ok(done) => {
                if tx.blocking_send(done).is_err() {
                    return;
                }
            }
            Err(Interrupt::Yield) => {
                let mut q = queue.lock().expect("precompute queue");
                q.jobs.entry((job.kind, job.vip)).or_insert(job);
            }
            Err(Interrupt::Superseded) => {}
        }
    }
}

enum Interrupt {
    Superseded,
    Yield,
}

/// Builds the job's tables, unless interrupted between two builds.
fn run(job: &Job, interrupt: impl Fn() -> Option<Interrupt>) -> Result<Done, Interrupt> {
    let build = |w: &Weights| {
        plan::build_table(
            job.seed,
            &job.plan,
            |b| {
                let pos = job.plan.backends.iter().position(|x| x.index == b.index)?;
                w[pos]
            },
            None,
        )
    };
    let start = build(&job.from);
    let mut steps = Vec::with_capacity(job.targets.len());
    let (mut prev_w, mut prev) = (job.from.clone(), start);
    for target in &job.targets {
        if let Some(why) = interrupt() {
            return Err(why);
        }
        let table = build(target);
        let Some(diff) = SlotDiff::between(&prev, &table) else {
            return Err(Interrupt::Superseded);
        };
        steps.push(Step {
            from: prev_w.clone(),
            to: target.clone(),
            diff,
        });
        if job.kind != Kind::Singles {
            (prev_w, prev) = (target.clone(), table);
        }
    }
    Ok(Done {
        vip: job.vip,
        kind: job.kind,
        region: job.plan.region,
        indices: job.plan.backends.iter().map(|b| b.index).collect(),
        from: job.from.clone(),
        steps,
    })
}
