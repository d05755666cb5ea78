//! The one accept loop every listener runs.
//!
//! [`serve`] accepts a connection, asks the listener's [`Policy`] to admit
//! the raw peer IP (before any other work), takes a slot from the
//! [`SlotTable`] it was handed and spawns one task per connection that owns
//! its slot. A full table sheds its least valuable unauthenticated
//! connection to make room (see `slots`); the shed connection's task is
//! dropped at its next turn, closing its socket. Sheds are logged as one
//! `ACTION=conn-shed` summary line per [`SHED_REPORT_INTERVAL`]. When every
//! slot is established, the policy's [`Policy::full`] hook decides: close
//! the connection, or hand it to work of its own (say, a small second pool
//! that answers "busy").
//!
//! Accept errors never stop the loop. Resource exhaustion (`EMFILE`,
//! `ENFILE`, `ENOBUFS`, `ENOMEM`) waits [`ACCEPT_BACKOFF`] before the next
//! try instead of spinning, and is logged once per episode; a connection
//! that died in the backlog (`ECONNABORTED`, `EINTR`, the network errors
//! accept(2) passes through) is skipped at once; anything else is logged
//! and backed off too, so a broken listener cannot spin either.
//!
//! Shutdown: the stop future is polled before every accept and raced with
//! every backoff, and the loop yields to the executor after each
//! connection. A listener whose backlog is never empty therefore cannot
//! starve the stop signal, timers, or the connections already in flight.
//! The stop future may do work of its own while the loop runs (re-read
//! files on a reload signal, say) and ends the loop by completing.
//!
//! What this module leaves to the policy: every check on the peer, the
//! answer to a connection, its deadlines, and the log lines of its errors
//! (which name the peer and the phase that failed).

use std::future::Future;
use std::io;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustix::io::Errno;
use smol::future::{self, FutureExt};
use smol::{Async, Timer};

use crate::net::limits::{ACCEPT_BACKOFF, SHED_REPORT_INTERVAL};
use crate::net::server::canonical_ip;
use crate::net::slots::{Slot, SlotHandle, SlotTable, Take};
use crate::{log, rt};

/// The work spawned for one connection.
pub type Work = future::Boxed<()>;

/// One accepted connection, not yet read from.
pub struct Incoming {
    /// The socket, exactly as accepted.
    pub tcp: Async<TcpStream>,
    /// The peer's IP, with IPv4-mapped IPv6 turned into IPv4.
    pub peer: IpAddr,
    /// When it was accepted.
    pub accepted: Instant,
    /// Its slot: the work calls [`SlotHandle::establish`] once the peer has
    /// proved itself, so it is no longer shed to make room.
    pub slot: SlotHandle,
}

/// What a listener decides about the connections it accepts.
///
/// The loop calls the hooks in this order for each connection: [`admit`],
/// then [`permit`]; with a slot, [`serve`] runs in a task that holds it
/// (and is dropped if the slot is shed); without, [`full`] says what to do
/// instead. Hooks other than the work they
/// return run on the accept path, so they must be quick and never block.
///
/// [`admit`]: Policy::admit
/// [`permit`]: Policy::permit
/// [`serve`]: Policy::serve
/// [`full`]: Policy::full
pub trait Policy: Send + Sync + 'static {
    /// Whether to go on with a connection from `peer`; `false` closes it at
    /// once, before any read or handshake. Logs its own refusals.
    fn admit(&self, peer: IpAddr) -> bool {
        let _ = peer;
        true
    }

    /// A slot for a connection from `peer` accepted at `now`: the table's
    /// [`SlotTable::take`] (a free slot, else one made by shedding an
    /// unauthenticated connection, else [`Take::Full`]).
    fn permit(&self, peer: IpAddr, table: &Arc<SlotTable>, now: Instant) -> Take {
        table.take(peer, now)
    }

    /// The work for a connection that got a slot. It runs in its own task;
    /// the slot is freed when it ends, and the work is dropped (at its next
    /// `.await`) if the slot is shed first.
    fn serve(self: Arc<Self>, conn: Incoming) -> Work;

    /// A connection that found every slot established: `None` closes it;
    /// `Some` is spawned in its own task (holding whatever permit of its own
    /// it took). `slot` in `conn` is [`SlotHandle::detached`] here.
    fn full(self: Arc<Self>, conn: Incoming) -> Option<Work>;
}

/// Accepts on `listener` until `stop` completes, and returns its output.
///
/// Each accepted connection goes through `policy` (see [`Policy`]) with
/// slots from `table`, whose capacity bounds the connections served at
/// once. The caller keeps a clone of `table` to wait for connections in
/// flight after the loop returns ([`SlotTable::drained`]). Never returns an error: accept errors are
/// handled as the module documentation says.
pub async fn serve<T>(
    listener: &Async<TcpListener>,
    table: &Arc<SlotTable>,
    policy: Arc<dyn Policy>,
    stop: impl Future<Output = T>,
) -> T {
    let mut stop = pin!(stop);
    let mut exhausted = false;
    let reported = Mutex::new(None);
    loop {
        // `or` polls its first future first: the stop signal wins whenever
        // it is ready, however many connections are waiting.
        let step = future::or(async { Step::Stop(stop.as_mut().await) }, async {
            Step::Accepted(listener.accept().await)
        })
        .await;
        let error = match step {
            Step::Stop(out) => return out,
            Step::Accepted(Ok((tcp, addr))) => {
                exhausted = false;
                dispatch(&policy, table, tcp, canonical_ip(addr.ip()), &reported);
                // Accept never waits while the backlog is full; give the
                // executor (connections, timers, signals) its turn.
                future::yield_now().await;
                continue;
            }
            Step::Accepted(Err(e)) => e,
        };
        match classify(&error) {
            AcceptError::Skip => continue,
            AcceptError::Exhausted => {
                if !exhausted {
                    log::warn(
                        "accept-exhausted",
                        &[
                            ("REASON", &error.to_string()),
                            ("BACKOFF_MS", &ACCEPT_BACKOFF.as_millis().to_string()),
                        ],
                    );
                }
                exhausted = true;
            }
            AcceptError::Other => log::warn("accept-error", &[("REASON", &error.to_string())]),
        }
        let backoff = async {
            Timer::after(ACCEPT_BACKOFF).await;
            None
        };
        if let Some(out) = async { Some(stop.as_mut().await) }.or(backoff).await {
            return out;
        }
    }
}

/// One turn of the loop.
enum Step<T> {
    /// The stop future completed.
    Stop(T),
    /// `accept` returned.
    Accepted(io::Result<(Async<TcpStream>, std::net::SocketAddr)>),
}

/// Admission, slot, then one task: the per-connection part of the loop,
/// kept out of the generic [`serve`] so it is compiled once. `reported`
/// holds when the last `conn-shed` line was written.
fn dispatch(
    policy: &Arc<dyn Policy>,
    table: &Arc<SlotTable>,
    tcp: Async<TcpStream>,
    peer: IpAddr,
    reported: &Mutex<Option<Instant>>,
) {
    if !policy.admit(peer) {
        return;
    }
    let now = Instant::now();
    let slot = match policy.permit(peer, table, now) {
        Take::Free(slot) => slot,
        Take::Shed { slot, shed } => {
            report_shed(table, shed, now, reported);
            slot
        }
        Take::Full => {
            let conn = Incoming {
                tcp,
                peer,
                accepted: now,
                slot: SlotHandle::detached(),
            };
            if let Some(work) = policy.clone().full(conn) {
                rt::spawn(work).detach();
            }
            return;
        }
    };
    let conn = Incoming {
        tcp,
        peer,
        accepted: now,
        slot: slot.handle(),
    };
    let work = policy.clone().serve(conn);
    rt::spawn(run_in_slot(work, slot)).detach();
}

/// Runs `work` until it ends or `slot` is shed; either way the slot (and
/// with the work, the socket) is dropped here.
async fn run_in_slot(work: Work, slot: Slot) {
    work.or(slot.cancelled()).await;
    drop(slot);
}

/// One summary line per [`SHED_REPORT_INTERVAL`] while connections are
/// being shed: how many, the last shed peer, and the unauthenticated
/// connections still held.
fn report_shed(table: &SlotTable, shed: IpAddr, now: Instant, reported: &Mutex<Option<Instant>>) {
    let mut last = reported.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| now.duration_since(t) < SHED_REPORT_INTERVAL) {
        return;
    }
    *last = Some(now);
    log::warn(
        "conn-shed",
        &[
            ("COUNT", &table.shed_since_report().to_string()),
            ("LAST_PEER", &shed.to_string()),
            ("SLOTS", &table.capacity().to_string()),
            ("UNAUTHENTICATED", &table.unauthenticated().to_string()),
        ],
    );
}

/// How the loop treats a failed accept.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// The connection died before we took it: go on at once.
    Skip,
    /// Out of descriptors, buffers or memory: wait, log once.
    Exhausted,
    /// Anything else: log and wait, so a broken listener does not spin.
    Other,
}

fn classify(e: &io::Error) -> AcceptError {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => return AcceptError::Skip,
        _ => {}
    }
    let Some(errno) = e.raw_os_error().map(Errno::from_raw_os_error) else {
        return AcceptError::Other;
    };
    match errno {
        Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM => AcceptError::Exhausted,
        // accept(2) on Linux passes pending network errors of the new
        // socket through; they concern that connection only.
        Errno::CONNABORTED
        | Errno::INTR
        | Errno::PROTO
        | Errno::NOPROTOOPT
        | Errno::HOSTDOWN
        | Errno::HOSTUNREACH
        | Errno::NETDOWN
        | Errno::NETUNREACH
        | Errno::OPNOTSUPP
        | Errno::PERM
        | Errno::TIMEDOUT => AcceptError::Skip,
        _ => AcceptError::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use smol::io::AsyncWriteExt;

    use crate::net::server;

    /// Counts what the loop did; `serve` holds each connection until a byte
    /// arrives (or the peer closes), `full` writes `b"F"` and closes.
    #[derive(Default)]
    struct Probe {
        refuse: bool,
        /// Marks every connection established before waiting (else they
        /// stay unauthenticated and may be shed).
        establish: bool,
        served: AtomicUsize,
        finished: AtomicUsize,
        full: AtomicUsize,
    }

    impl Policy for Probe {
        fn admit(&self, _peer: IpAddr) -> bool {
            !self.refuse
        }

        fn serve(self: Arc<Self>, conn: Incoming) -> Work {
            self.served.fetch_add(1, Ordering::SeqCst);
            if self.establish {
                conn.slot.establish();
            }
            async move {
                let mut tcp = conn.tcp;
                let mut byte = [0u8; 1];
                let _ = smol::io::AsyncReadExt::read(&mut tcp, &mut byte).await;
                let _ = tcp.write_all(b"S").await;
                self.finished.fetch_add(1, Ordering::SeqCst);
            }
            .boxed()
        }

        fn full(self: Arc<Self>, conn: Incoming) -> Option<Work> {
            self.full.fetch_add(1, Ordering::SeqCst);
            Some(
                async move {
                    let mut tcp = conn.tcp;
                    let _ = tcp.write_all(b"F").await;
                }
                .boxed(),
            )
        }
    }

    fn accepted(p: &Probe) -> usize {
        p.served.load(Ordering::SeqCst) + p.full.load(Ordering::SeqCst)
    }

    fn listener() -> (Async<TcpListener>, std::net::SocketAddr) {
        let l = server::bind("127.0.0.1", 0).unwrap();
        let addr = server::local_addr(&l).unwrap();
        (l, addr)
    }

    /// Polls `cond` under the executor until it holds or 5 s pass.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            Timer::after(Duration::from_millis(5)).await;
        }
    }

    fn connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn read_one(s: &mut std::net::TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    }

    #[test]
    fn established_table_invokes_full_policy_and_slots_come_back() {
        let (l, addr) = listener();
        let pool = SlotTable::new(2);
        let probe = Arc::new(Probe {
            establish: true,
            ..Probe::default()
        });
        let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
        let p = probe.clone();
        let client = std::thread::spawn(move || {
            // The backlog is accepted in order: the first two take both
            // slots (established, each waits for a byte), the third must
            // go to `full`.
            let mut held: Vec<_> = (0..2).map(|_| connect(addr)).collect();
            let mut third = connect(addr);
            assert_eq!(read_one(&mut third), b"F");
            assert_eq!(p.full.load(Ordering::SeqCst), 1);
            // Finish the held ones: their permits come back.
            for s in &mut held {
                s.write_all(b"x").unwrap();
                assert_eq!(read_one(s), b"S");
            }
            let mut fourth = connect(addr);
            fourth.write_all(b"x").unwrap();
            assert_eq!(read_one(&mut fourth), b"S");
            smol::block_on(done_tx.send(())).unwrap();
        });
        rt::block_on(async {
            serve(&l, &pool, probe.clone(), async {
                let _ = done_rx.recv().await;
            })
            .await;
            until("tasks to finish", || {
                probe.finished.load(Ordering::SeqCst) == 3
            })
            .await;
            until("slots to come back", || pool.live() == 0).await;
        });
        client.join().unwrap();
        assert_eq!(probe.served.load(Ordering::SeqCst), 3);
        assert_eq!(probe.full.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn unauthenticated_connections_are_shed_for_a_newcomer() {
        let (l, addr) = listener();
        let pool = SlotTable::new(2);
        let probe = Arc::new(Probe::default());
        let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
        let p = probe.clone();
        let client = std::thread::spawn(move || {
            // Two stalled connections fill the table; a third sheds the
            // oldest (its socket is closed: EOF) and is served.
            let mut oldest = connect(addr);
            let _younger = connect(addr);
            let mut third = connect(addr);
            assert_eq!(read_one(&mut oldest), b"");
            third.write_all(b"x").unwrap();
            assert_eq!(read_one(&mut third), b"S");
            assert_eq!(p.full.load(Ordering::SeqCst), 0);
            smol::block_on(done_tx.send(())).unwrap();
        });
        rt::block_on(serve(&l, &pool, probe.clone(), async {
            let _ = done_rx.recv().await;
        }));
        client.join().unwrap();
        assert_eq!(probe.served.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn refused_peer_is_closed_before_serve() {
        let (l, addr) = listener();
        let pool = SlotTable::new(4);
        let probe = Arc::new(Probe {
            refuse: true,
            ..Probe::default()
        });
        let client = std::thread::spawn(move || {
            let mut s = connect(addr);
            read_one(&mut s)
        });
        rt::block_on(serve(&l, &pool, probe.clone(), async {
            smol::unblock(move || client.join().unwrap()).await
        }));
        assert_eq!(probe.served.load(Ordering::SeqCst), 0);
        assert_eq!(probe.full.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn stop_is_checked_before_every_accept() {
        let (l, addr) = listener();
        let pool = SlotTable::new(64);
        let probe = Arc::new(Probe::default());
        // A backlog that never runs dry during the test.
        let backlog: Vec<_> = (0..32).map(|_| connect(addr)).collect();
        // Already stopped: nothing is accepted.
        rt::block_on(serve(&l, &pool, probe.clone(), future::ready(())));
        assert_eq!(accepted(&probe), 0);
        // Stopped once the first connection is served: the loop ends at the
        // next turn although 31 more are waiting.
        let p = probe.clone();
        let stop = future::poll_fn(move |_| {
            if p.served.load(Ordering::SeqCst) > 0 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        rt::block_on(serve(&l, &pool, probe.clone(), stop));
        assert_eq!(accepted(&probe), 1);
        drop(backlog);
    }

    #[test]
    fn stop_ends_loop_while_connections_keep_arriving() {
        let (l, addr) = listener();
        let pool = SlotTable::new(1);
        let probe = Arc::new(Probe::default());
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let floods: Vec<_> = (0..4)
            .map(|_| {
                let flooding = flooding.clone();
                std::thread::spawn(move || {
                    while flooding.load(Ordering::SeqCst) {
                        let _ = std::net::TcpStream::connect(addr);
                    }
                })
            })
            .collect();
        let p = probe.clone();
        let started = Instant::now();
        let stopped_after = rt::block_on(serve(&l, &pool, probe.clone(), async move {
            // Stop only once the flood is under way, then measure how long
            // the loop takes to notice.
            until("the flood to arrive", || accepted(&p) > 200).await;
            Instant::now()
        }));
        let noticed = stopped_after.elapsed();
        let total = started.elapsed();
        // Close the listener first so blocked connects fail at once.
        drop(l);
        flooding.store(false, Ordering::SeqCst);
        for f in floods {
            f.join().unwrap();
        }
        assert!(accepted(&probe) > 200);
        assert!(
            noticed < Duration::from_secs(1),
            "stop noticed after {noticed:?}"
        );
        assert!(total < Duration::from_secs(10), "stop was starved");
    }

    #[test]
    fn accept_errors_are_classified() {
        let os = |e: Errno| io::Error::from_raw_os_error(e.raw_os_error());
        assert_eq!(classify(&os(Errno::MFILE)), AcceptError::Exhausted);
        assert_eq!(classify(&os(Errno::NFILE)), AcceptError::Exhausted);
        assert_eq!(classify(&os(Errno::NOBUFS)), AcceptError::Exhausted);
        assert_eq!(classify(&os(Errno::NOMEM)), AcceptError::Exhausted);
        assert_eq!(classify(&os(Errno::CONNABORTED)), AcceptError::Skip);
        assert_eq!(classify(&os(Errno::INTR)), AcceptError::Skip);
        assert_eq!(classify(&os(Errno::BADF)), AcceptError::Other);
        assert_eq!(classify(&io::Error::other("no errno")), AcceptError::Other);
    }
}
