//! Fan-out queues between pipeline stages.
//!
//! A producer (a capture thread, an encoder) must never wait for a consumer: a
//! camera that is not drained stalls or drops frames in the driver, where we
//! cannot count them. So every queue is a bounded ring that overwrites its
//! oldest entry when a consumer falls behind, and the consumer learns how many
//! it missed. tokio's broadcast channel has exactly these semantics (a lagging
//! receiver gets `Lagged(n)`), works from threads and tasks alike, and lets
//! several consumers (encoder, console snapshot, transcription) share one
//! producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

/// Counters of one queue, shared by its producer and consumers.
#[derive(Debug, Default)]
pub struct BusCounters {
    published: AtomicU64,
    dropped: AtomicU64,
}

impl BusCounters {
    /// Items the producer put in.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Items some consumer missed because it fell behind (summed over consumers).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The producing end. Dropping it closes the queue: consumers drain what is
/// left and then see the end, which is how a pipeline shuts down in order.
#[derive(Debug)]
pub struct Publisher<T> {
    tx: broadcast::Sender<Arc<T>>,
    counters: Arc<BusCounters>,
}

/// A handle to subscribe to a queue; it does not keep the queue open.
#[derive(Debug)]
pub struct Bus<T> {
    tx: broadcast::WeakSender<Arc<T>>,
    counters: Arc<BusCounters>,
}

impl<T> Clone for Bus<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// Creates a queue holding at most `capacity` items per consumer (at least one).
pub fn bus<T>(capacity: usize) -> (Publisher<T>, Bus<T>) {
    let (tx, _) = broadcast::channel(capacity.max(1));
    let counters = Arc::new(BusCounters::default());
    let bus = Bus {
        tx: tx.downgrade(),
        counters: counters.clone(),
    };
    (Publisher { tx, counters }, bus)
}

impl<T> Publisher<T> {
    /// Puts an item in without waiting; with no consumer it is simply dropped.
    pub fn publish(&self, item: T) {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        // An error only means nobody is subscribed right now, which is normal.
        let _ = self.tx.send(Arc::new(item));
    }

    /// Consumers subscribed now; a producer may skip expensive work when zero.
    pub fn consumers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A subscription handle for this queue.
    pub fn bus(&self) -> Bus<T> {
        Bus {
            tx: self.tx.downgrade(),
            counters: self.counters.clone(),
        }
    }
}

impl<T> Bus<T> {
    /// Subscribes from the next item on; `None` once the producer has gone.
    pub fn subscribe(&self) -> Option<Subscriber<T>> {
        let tx = self.tx.upgrade()?;
        Some(Subscriber {
            rx: tx.subscribe(),
            counters: self.counters.clone(),
        })
    }

    /// The queue's counters.
    pub fn counters(&self) -> &BusCounters {
        &self.counters
    }
}

/// One item handed to a consumer.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The item.
    pub item: Arc<T>,
    /// Items this consumer missed just before this one (0 when it kept up).
    pub missed: u64,
}

/// The consuming end of one consumer.
#[derive(Debug)]
pub struct Subscriber<T> {
    rx: broadcast::Receiver<Arc<T>>,
    counters: Arc<BusCounters>,
}

impl<T> Subscriber<T> {
    /// Waits for the next item; `None` once the producer has gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<Delivery<T>> {
        let mut missed = 0;
        loop {
            match self.rx.recv().await {
                Ok(item) => return Some(Delivery { item, missed }),
                Err(broadcast::error::RecvError::Lagged(n)) => missed += self.count_missed(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Like [`recv`](Self::recv), for a plain thread; must not be called inside an async task.
    pub fn blocking_recv(&mut self) -> Option<Delivery<T>> {
        let mut missed = 0;
        loop {
            match self.rx.blocking_recv() {
                Ok(item) => return Some(Delivery { item, missed }),
                Err(broadcast::error::RecvError::Lagged(n)) => missed += self.count_missed(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn count_missed(&self, n: u64) -> u64 {
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_consumer_loses_the_oldest_and_never_blocks_the_producer() {
        let (publisher, bus) = bus::<u64>(4);
        let mut slow = bus.subscribe().unwrap();
        // The producer runs far ahead; every publish returns at once.
        for i in 0..100 {
            publisher.publish(i);
        }
        let first = slow.blocking_recv().unwrap();
        assert_eq!(first.missed, 96, "only the newest four are kept");
        assert_eq!(*first.item, 96);
        let rest: Vec<u64> = (0..3)
            .map(|_| *slow.blocking_recv().unwrap().item)
            .collect();
        assert_eq!(rest, vec![97, 98, 99]);
        assert_eq!(bus.counters().published(), 100);
        assert_eq!(bus.counters().dropped(), 96);
    }

    #[test]
    fn each_consumer_keeps_its_own_pace() {
        let (publisher, bus) = bus::<u64>(2);
        let mut fast = bus.subscribe().unwrap();
        let mut slow = bus.subscribe().unwrap();
        for i in 0..5 {
            publisher.publish(i);
            assert_eq!(*fast.blocking_recv().unwrap().item, i);
        }
        let d = slow.blocking_recv().unwrap();
        assert_eq!((*d.item, d.missed), (3, 3));
        assert_eq!(bus.counters().dropped(), 3);
    }

    #[test]
    fn dropping_the_publisher_ends_the_stream_after_the_backlog() {
        let (publisher, bus) = bus::<u64>(8);
        let mut sub = bus.subscribe().unwrap();
        publisher.publish(1);
        publisher.publish(2);
        drop(publisher);
        assert_eq!(*sub.blocking_recv().unwrap().item, 1);
        assert_eq!(*sub.blocking_recv().unwrap().item, 2);
        assert!(sub.blocking_recv().is_none());
        assert!(
            bus.subscribe().is_none(),
            "nothing to subscribe to any more"
        );
    }

    #[test]
    fn consumers_are_counted_so_producers_can_idle() {
        let (publisher, bus) = bus::<u64>(2);
        assert_eq!(publisher.consumers(), 0);
        let sub = bus.subscribe().unwrap();
        assert_eq!(publisher.consumers(), 1);
        drop(sub);
        assert_eq!(publisher.consumers(), 0);
    }
}
