//! Domain events: what the presence stage concludes, for the POS, the store and (later) sync.

use serde::Serialize;
use uuid::Uuid;

use crate::Millis;
use crate::resolve::CustomerId;

/// A customer was convincingly near a scanner: a visit starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerArrived {
    pub visit_id: Uuid,
    pub customer: CustomerId,
    pub zone: String,
    pub arrived_at_ms: Millis,
}

/// A customer has not been near any scanner for the configured absence: the visit ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerLeft {
    pub visit_id: Uuid,
    pub customer: CustomerId,
    /// The zone where the customer was last seen near.
    pub zone: String,
    pub arrived_at_ms: Millis,
    /// When the customer was last seen near (not when the absence was noticed).
    pub left_at_ms: Millis,
    pub dwell_s: u64,
}

/// A present customer moved to another zone of the shop (several scanners): the zone whose
/// scanners hear them best changed, and stayed changed for the zone dwell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneChanged {
    pub visit_id: Uuid,
    pub customer: CustomerId,
    pub from_zone: String,
    pub zone: String,
    pub at_ms: Millis,
}

/// Everything the presence stage emits, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum PresenceEvent {
    CustomerArrived(CustomerArrived),
    CustomerLeft(CustomerLeft),
    ZoneChanged(ZoneChanged),
}

impl PresenceEvent {
    /// Moves the event's times by `ms` (from the pipeline's steady time to wall time).
    pub fn shift(&mut self, ms: i64) {
        let by = |t: &mut Millis| *t = t.saturating_add_signed(ms);
        match self {
            PresenceEvent::CustomerArrived(e) => by(&mut e.arrived_at_ms),
            PresenceEvent::CustomerLeft(e) => {
                by(&mut e.arrived_at_ms);
                by(&mut e.left_at_ms);
            }
            PresenceEvent::ZoneChanged(e) => by(&mut e.at_ms),
        }
    }

    pub fn customer(&self) -> CustomerId {
        match self {
            PresenceEvent::CustomerArrived(e) => e.customer,
            PresenceEvent::CustomerLeft(e) => e.customer,
            PresenceEvent::ZoneChanged(e) => e.customer,
        }
    }
}
