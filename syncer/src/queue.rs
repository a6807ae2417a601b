//! A deduplicating work queue with per-key exponential backoff, in the manner
//! of client-go's workqueue: a key is queued at most once, is never handed to
//! two workers at the same time, and a key added while it is being processed
//! is queued again once it is done.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Exponential backoff of failing keys: `base * 2^(failures-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay before retrying a key that failed `failures` times in a row (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1u32 << exponent).min(self.max)
    }
}

struct State<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    dirty: HashSet<K>,
    failures: HashMap<K, u32>,
    delayed: HashMap<K, Instant>,
    shut_down: bool,
}

/// The work queue (see the module doc). Share it in an [`Arc`].
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    backoff: Backoff,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// An empty queue retrying failures with `backoff`.
    pub fn new(backoff: Backoff) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
                delayed: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
            backoff,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // The state stays consistent across a panicking holder: every
        // mutation is a single collection operation.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` now (no-op when already queued).
    pub fn add(&self, key: K) {
        let mut state = self.lock();
        if state.shut_down || state.queued.contains(&key) {
            return;
        }
        if state.active.contains(&key) {
            state.dirty.insert(key);
            return;
        }
        state.queued.insert(key.clone());
        state.queue.push_back(key);
        drop(state);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay` (keeps an earlier pending delayed add).
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let due = Instant::now() + delay;
        {
            let mut state = self.lock();
            if state.shut_down || state.delayed.get(&key).is_some_and(|at| *at <= due) {
                return;
            }
            state.delayed.insert(key.clone(), due);
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            if let Some(queue) = queue.upgrade() {
                let mut state = queue.lock();
                if state.delayed.get(&key) == Some(&due) {
                    state.delayed.remove(&key);
                }
                drop(state);
                queue.add(key);
            }
        });
    }

    /// Records a failure of `key` and queues it after its backoff delay, which is returned.
    pub fn retry(self: &Arc<Self>, key: K) -> Duration {
        let failures = {
            let mut state = self.lock();
            let count = state.failures.entry(key.clone()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let delay = self.backoff.delay(failures);
        self.add_after(key, delay);
        delay
    }

    /// Forgets the failures of `key` (call after a success).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// How many times in a row `key` failed.
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key; `None` once the queue is shut down.
    /// Call [`WorkQueue::done`] when finished with the key.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.lock();
                if state.shut_down {
                    return None;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.queued.remove(&key);
                    state.active.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut state = self.lock();
        state.active.remove(key);
        if state.dirty.remove(key) && !state.shut_down && state.queued.insert(key.clone()) {
            state.queue.push_back(key.clone());
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Number of keys waiting (not counting delayed or active ones).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys; every [`WorkQueue::next`] returns `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_queued_keys() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(q.next().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_active_comes_back_after_done() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        let key = q.next().await.unwrap();
        q.add("a");
        q.add("a");
        // Not handed out twice at once.
        assert!(q.is_empty());
        q.done(&key);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, Some("a"));
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_backs_off_and_requeues() {
        let q = WorkQueue::new(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        q.add("a");
        let key = q.next().await.unwrap();
        assert_eq!(q.retry(key), Duration::from_millis(100));
        q.done(&key);
        assert!(q.is_empty());
        // Paused time auto-advances to the delayed add.
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(q.retry("a"), Duration::from_millis(200));
        assert_eq!(q.failures(&"a"), 2);
        q.forget(&"a");
        assert_eq!(q.failures(&"a"), 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(2),
        };
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn shut_down_releases_waiters() {
        let q: Arc<WorkQueue<&str>> = WorkQueue::new(Backoff::default());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
        q.add("a");
        assert!(q.is_empty());
    }
}
