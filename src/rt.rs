//! The async runtime: one executor driven by the main thread.
//!
//! Every role calls [`block_on`] once from `main`; tasks are spawned with
//! [`spawn`]. The child-process reaper runs as a task on the same executor, so
//! no extra thread is started for it. [`deadline`] races a future against a
//! fixed instant and is the only way the code waits on anything outside the
//! process. [`FileWork`] says where a caller's file work runs.

use std::future::Future;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::Executor;
use smol::Timer;

static EXECUTOR: Executor<'static> = Executor::new();

/// Runs `fut` to completion on the calling thread, driving spawned tasks too.
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    let driver = EXECUTOR.spawn(smol::process::driver());
    let out = smol::block_on(EXECUTOR.run(fut));
    drop(driver);
    out
}

/// Where file work (small reads and writes on local state) runs.
///
/// A server's executor must never wait on the disk, so it hands file work
/// to the blocking pool. A one-shot command waits for the result anyway:
/// doing it inline there saves a thread start and two hand-offs per step,
/// a measurable share of a one-host `ced run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileWork {
    /// On a blocking-pool thread (`smol::unblock`): servers.
    Offloaded,
    /// On the calling task: one-shot commands.
    Inline,
}

impl FileWork {
    /// Runs `work` where this mode says.
    pub async fn run<T: Send + 'static>(self, work: impl FnOnce() -> T + Send + 'static) -> T {
        match self {
            FileWork::Offloaded => smol::unblock(work).await,
            FileWork::Inline => work(),
        }
    }
}

/// Spawns a task on the role's executor. Dropping the returned task cancels it.
pub fn spawn<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> smol::Task<T> {
    EXECUTOR.spawn(fut)
}

/// The error of a future that did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Runs `fut` until `at`; a deadline in the past still lets a ready future win.
pub async fn deadline<T>(at: Instant, fut: impl Future<Output = T>) -> Result<T, TimedOut> {
    async { Ok(fut.await) }
        .or(async {
            Timer::at(at).await;
            Err(TimedOut)
        })
        .await
}

/// Like [`deadline`] with a duration from now; `None` waits forever.
pub async fn timeout<T>(
    limit: Option<Duration>,
    fut: impl Future<Output = T>,
) -> Result<T, TimedOut> {
    match limit {
        Some(d) => deadline(Instant::now() + d, fut).await,
        None => Ok(fut.await),
    }
}

/// Waits without blocking the executor.
pub async fn sleep(d: Duration) {
    Timer::after(d).await;
}
