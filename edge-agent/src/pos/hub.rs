//! The live event hub: every event tablets see (arrivals, departures, acknowledgements) is
//! appended to the store's event log and then broadcast, under one lock, so event ids reach
//! every tablet in increasing order. A tablet that reconnects with its last event id gets
//! exactly what it missed from the log, then the live feed, each event once. When the log
//! cannot be written (a full disk), events still go out live, with id 0 and no resume.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::Millis;
use crate::resolve::CustomerId;
use crate::store::{PosEvent, Store};

/// Events buffered per slow tablet before it falls back to reading the log.
const BROADCAST_CAPACITY: usize = 256;

/// Shared by the store thread and the HTTP handlers.
#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<PosEvent>,
    append_lock: Arc<Mutex<()>>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    pub fn new() -> EventHub {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        EventHub {
            sender,
            append_lock: Arc::new(Mutex::new(())),
        }
    }

    /// Appends an event to the log through `store` and broadcasts it.
    pub fn publish<T: Serialize>(
        &self,
        store: &mut Store,
        kind: &str,
        customer: Option<CustomerId>,
        body: &T,
        at: Millis,
    ) -> anyhow::Result<i64> {
        let body = serde_json::to_string(body)?;
        let _order = self.append_lock.lock().expect("hub lock");
        let id = match store.append_pos_event(kind, customer, &body, at) {
            Ok(id) => id,
            Err(e) => {
                // The disk is full: tablets still get the event now (id 0: not resumable).
                let _ = self.sender.send(PosEvent {
                    id: 0,
                    kind: kind.to_string(),
                    body,
                    at_ms: at,
                });
                return Err(e.context("the event log could not be written; sent live only"));
            }
        };
        // No receivers is fine: no tablet is connected.
        let _ = self.sender.send(PosEvent {
            id,
            kind: kind.to_string(),
            body,
            at_ms: at,
        });
        Ok(id)
    }

    /// Live events from now on. Subscribe before reading the log, then skip ids already sent.
    pub fn subscribe(&self) -> broadcast::Receiver<PosEvent> {
        self.sender.subscribe()
    }

    /// Connected live subscribers.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// Bounds the live streams: so many per tablet (a tablet reconnecting leaves a stream or two
/// behind for a moment) and in all, so one token cannot open streams without end.
pub struct LiveStreams {
    per_tablet: usize,
    total: usize,
    open: Arc<std::sync::Mutex<std::collections::HashMap<i64, usize>>>,
}

/// One open stream's place; freed when dropped.
pub struct StreamSlot {
    device: i64,
    open: Arc<std::sync::Mutex<std::collections::HashMap<i64, usize>>>,
}

impl LiveStreams {
    pub fn new(per_tablet: usize, total: usize) -> LiveStreams {
        LiveStreams {
            per_tablet,
            total,
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `device`, or why there is none.
    pub fn open(&self, device: i64) -> Result<StreamSlot, String> {
        let mut open = self.open.lock().expect("streams lock");
        if open.values().sum::<usize>() >= self.total {
            return Err(format!(
                "the box serves {} live streams at most; try again shortly",
                self.total
            ));
        }
        let count = open.entry(device).or_default();
        if *count >= self.per_tablet {
            return Err(format!(
                "this tablet has {} live streams open already; close other tabs or windows",
                self.per_tablet
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            device,
            open: self.open.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("streams lock");
        if let Some(count) = open.get_mut(&self.device) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.device);
            }
        }
    }
}
