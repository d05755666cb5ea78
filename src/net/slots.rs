//! Connection slots: a listener's bounded table of live connections, each
//! with its phase, that makes room for a newcomer by shedding the least
//! valuable unauthenticated connection instead of refusing the newcomer.
//!
//! A connection starts [`Phase::Unauthenticated`]: it has not yet proved
//! anything (TLS handshake not done, or request not fully read). The
//! listener's work marks it [`Phase::Established`] once it has (a trusted
//! client certificate, a whole request). When every slot is taken, a new
//! connection sheds one unauthenticated connection: one from the IP that
//! holds the most unauthenticated slots, the oldest of those. Only when
//! every slot is established is the newcomer refused, so peers that send
//! nothing, or half a handshake, or half a request, can never keep anyone
//! out: they only push each other out, and an established connection is
//! never shed.
//!
//! Shedding is a signal: the shed entry leaves the table at once (its place
//! goes to the newcomer) and its task sees [`Slot::cancelled`] complete at
//! its next turn on the executor, which drops the connection's work and so
//! its socket.
//!
//! Invariant: the table never holds more than `capacity` entries; each
//! [`Slot`] owns exactly one entry until it is dropped or shed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use smol::channel::{self, Receiver, Sender};

/// How far a connection has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing proved yet: may be shed to make room.
    Unauthenticated,
    /// Proved (trusted certificate, or a whole request): never shed.
    Established,
}

/// What [`SlotTable::take`] did.
#[derive(Debug)]
pub enum Take {
    /// A free slot.
    Free(Slot),
    /// A slot made by shedding an unauthenticated connection from `shed`.
    Shed {
        /// The newcomer's slot.
        slot: Slot,
        /// The peer of the connection that was shed.
        shed: IpAddr,
    },
    /// Every slot is established (or the table is closed): no room.
    Full,
}

/// One live connection in the table.
#[derive(Debug)]
struct Entry {
    id: u64,
    peer: IpAddr,
    accepted: Instant,
    phase: Phase,
    /// Dropped when the entry is shed, which closes the slot's receiver.
    _cancel: Sender<()>,
}

#[derive(Debug)]
struct Inner {
    next_id: u64,
    entries: Vec<Entry>,
    /// One clone per slot; `None` once [`SlotTable::drained`] began.
    alive: Option<Sender<()>>,
    /// Connections shed since the last [`SlotTable::shed_since_report`].
    shed_unreported: u64,
}

/// The slot table of one listener.
#[derive(Debug)]
pub struct SlotTable {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Closed once every slot's `alive` clone and the table's are gone.
    drained: Receiver<()>,
}

/// A connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    table: Arc<SlotTable>,
    id: u64,
    cancel: Receiver<()>,
    _alive: Sender<()>,
}

/// A handle the connection's work uses to report its phase.
#[derive(Debug, Clone)]
pub struct SlotHandle {
    /// `None` for a connection that holds no slot.
    table: Option<Arc<SlotTable>>,
    id: u64,
}

impl SlotTable {
    /// A table of `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Arc<SlotTable> {
        let (tx, rx) = channel::bounded(1);
        Arc::new(SlotTable {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                next_id: 0,
                entries: Vec::new(),
                alive: Some(tx),
                shed_unreported: 0,
            }),
            drained: rx,
        })
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Connections in the table now.
    pub fn live(&self) -> usize {
        self.lock().entries.len()
    }

    /// Connections in the table now that are still unauthenticated.
    pub fn unauthenticated(&self) -> usize {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .filter(|e| e.phase == Phase::Unauthenticated)
            .count()
    }

    /// A slot for a connection from `peer` accepted at `now`: a free one,
    /// else one made by shedding (see the module documentation), else
    /// [`Take::Full`].
    pub fn take(self: &Arc<Self>, peer: IpAddr, now: Instant) -> Take {
        let mut inner = self.lock();
        let Some(alive) = inner.alive.clone() else {
            return Take::Full;
        };
        let shed = if inner.entries.len() >= self.capacity {
            let Some(victim) = victim(&inner.entries) else {
                return Take::Full;
            };
            let gone = inner.entries.swap_remove(victim);
            inner.shed_unreported += 1;
            Some(gone.peer)
        } else {
            None
        };
        let id = inner.next_id;
        inner.next_id += 1;
        let (cancel_tx, cancel_rx) = channel::bounded(1);
        inner.entries.push(Entry {
            id,
            peer,
            accepted: now,
            phase: Phase::Unauthenticated,
            _cancel: cancel_tx,
        });
        drop(inner);
        let slot = Slot {
            table: self.clone(),
            id,
            cancel: cancel_rx,
            _alive: alive,
        };
        match shed {
            Some(shed) => Take::Shed { slot, shed },
            None => Take::Free(slot),
        }
    }

    /// How many connections were shed since the last call (for a summary
    /// log line instead of one line per shed connection).
    pub fn shed_since_report(&self) -> u64 {
        std::mem::take(&mut self.lock().shed_unreported)
    }

    /// Refuses new slots from now on and completes once every slot is gone.
    pub async fn drained(&self) {
        self.lock().alive = None;
        // Every sender is a slot's clone; `recv` fails once the last goes.
        while self.drained.recv().await.is_ok() {}
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The table's state stays consistent at every unlock: a panic
        // elsewhere while holding it cannot leave half an update.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_phase(&self, id: u64, phase: Phase) {
        if let Some(e) = self.lock().entries.iter_mut().find(|e| e.id == id) {
            e.phase = phase;
        }
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| e.id == id) {
            inner.entries.swap_remove(i);
        }
    }
}

/// The entry to shed: unauthenticated, from the IP holding the most
/// unauthenticated entries, the oldest of those; `None` if all are
/// established.
fn victim(entries: &[Entry]) -> Option<usize> {
    let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
    for e in entries.iter().filter(|e| e.phase == Phase::Unauthenticated) {
        *per_ip.entry(e.peer).or_default() += 1;
    }
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.phase == Phase::Unauthenticated)
        .min_by_key(|(_, e)| {
            let held = per_ip.get(&e.peer).copied().unwrap_or(0);
            (std::cmp::Reverse(held), e.accepted, e.id)
        })
        .map(|(i, _)| i)
}

impl Slot {
    /// The handle the connection's work reports its phase through.
    pub fn handle(&self) -> SlotHandle {
        SlotHandle {
            table: Some(self.table.clone()),
            id: self.id,
        }
    }

    /// Completes when this connection has been shed.
    pub async fn cancelled(&self) {
        // Nothing is ever sent: the receiver only closes, when the entry
        // (holding the sender) leaves the table by shedding.
        while self.cancel.recv().await.is_ok() {}
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

impl SlotHandle {
    /// The handle of a connection that holds no slot (one the table had no
    /// room for): [`establish`](SlotHandle::establish) does nothing.
    pub fn detached() -> SlotHandle {
        SlotHandle { table: None, id: 0 }
    }

    /// Marks the connection established: from now on it is never shed.
    pub fn establish(&self) {
        if let Some(t) = &self.table {
            t.set_phase(self.id, Phase::Established);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    fn slot(t: Take) -> Slot {
        match t {
            Take::Free(s) | Take::Shed { slot: s, .. } => s,
            Take::Full => panic!("no slot"),
        }
    }

    fn is_cancelled(s: &Slot) -> bool {
        s.cancel.is_closed()
    }

    #[test]
    fn free_slots_are_taken_without_shedding() {
        let t = SlotTable::new(2);
        let now = Instant::now();
        assert!(matches!(t.take(ip(1), now), Take::Free(_)));
        let a = slot(t.take(ip(1), now));
        let b = slot(t.take(ip(1), now));
        assert_eq!(t.live(), 2);
        drop((a, b));
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn full_table_sheds_the_oldest_unauthenticated() {
        let t = SlotTable::new(2);
        let t0 = Instant::now();
        let old = slot(t.take(ip(2), t0));
        let young = slot(t.take(ip(3), t0 + Duration::from_secs(1)));
        let new = match t.take(ip(1), t0 + Duration::from_secs(2)) {
            Take::Shed { shed, slot } => {
                assert_eq!(shed, ip(2));
                slot
            }
            other => panic!("expected a shed, got {other:?}"),
        };
        assert!(!is_cancelled(&new));
        assert!(is_cancelled(&old));
        // The shed connection's task wakes: `cancelled` completes.
        smol::block_on(old.cancelled());
        assert!(!is_cancelled(&young));
        assert_eq!(t.live(), 2, "the new slot is in, the young one stays");
        assert_eq!(t.shed_since_report(), 1);
        assert_eq!(t.shed_since_report(), 0);
    }

    #[test]
    fn the_ip_holding_most_slots_is_shed_first() {
        let t = SlotTable::new(4);
        let t0 = Instant::now();
        // The oldest is a lone peer; a flooder holds three younger slots.
        let lone = slot(t.take(ip(9), t0));
        let flood: Vec<_> = (1..4)
            .map(|i| slot(t.take(ip(5), t0 + Duration::from_secs(i))))
            .collect();
        let _new = slot(t.take(ip(1), t0 + Duration::from_secs(9)));
        assert!(!is_cancelled(&lone));
        assert!(is_cancelled(&flood[0]), "the flooder's oldest goes");
        assert!(!is_cancelled(&flood[1]));
    }

    #[test]
    fn established_connections_are_never_shed() {
        let t = SlotTable::new(2);
        let now = Instant::now();
        let a = slot(t.take(ip(1), now));
        a.handle().establish();
        let b = slot(t.take(ip(2), now));
        assert_eq!(t.unauthenticated(), 1);
        let c = slot(t.take(ip(3), now));
        assert!(!is_cancelled(&a));
        assert!(is_cancelled(&b));
        // Both established now: the next one finds no room.
        c.handle().establish();
        assert!(matches!(t.take(ip(4), now), Take::Full));
        drop(a);
        assert!(matches!(t.take(ip(4), now), Take::Free(_)));
    }

    #[test]
    fn a_flood_never_grows_the_table() {
        let t = SlotTable::new(8);
        let t0 = Instant::now();
        let mut held = Vec::new();
        for i in 0..300u64 {
            held.push(slot(
                t.take(ip((i % 200) as u8 + 2), t0 + Duration::from_millis(i)),
            ));
            assert!(t.live() <= 8);
        }
        let legit = slot(t.take(ip(1), t0 + Duration::from_secs(1)));
        legit.handle().establish();
        assert!(!is_cancelled(&legit));
        assert_eq!(held.iter().filter(|s| !is_cancelled(s)).count(), 7);
    }

    #[test]
    fn drained_waits_for_every_slot_and_refuses_new_ones() {
        let t = SlotTable::new(2);
        let a = slot(t.take(ip(1), Instant::now()));
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || smol::block_on(t.drained()))
        };
        // Closing happens first thing in `drained`; wait for it to show.
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.lock().alive.is_some() {
            assert!(Instant::now() < deadline, "drained never closed the table");
            std::thread::yield_now();
        }
        assert!(matches!(t.take(ip(2), Instant::now()), Take::Full));
        assert!(!waiter.is_finished());
        drop(a);
        waiter.join().unwrap();
    }
}
