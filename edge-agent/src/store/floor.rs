//! The owner's floor map: the shop's plan (an image the owner uploads), where zones and
//! scanners are marked on it, and each visit's stays per zone, from which a zone's figures of
//! the day come (how many visits were there, how long they stayed).
//!
//! Stays are written with the visit's own changes (`record_arrival`, `record_zone_change`,
//! `record_departure`) in the same transactions, and go with their visit.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::Millis;

/// The plan's image as the owner uploaded it.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorPlan {
    /// `image/png`, `image/jpeg` or `image/webp`.
    pub content_type: String,
    pub image: Vec<u8>,
    pub updated_at_ms: Millis,
}

/// What a mark on the plan stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    /// A zone of the shop, as scanners name it (e.g. `counter`).
    Zone,
    /// A scanner, by the name the owner page's health lists (e.g. `local`, `box:3`).
    Scanner,
}

impl MarkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Zone => "zone",
            MarkKind::Scanner => "scanner",
        }
    }

    /// `zone` or `scanner`; anything else is not a kind of mark.
    pub fn parse(text: &str) -> Option<MarkKind> {
        match text {
            "zone" => Some(MarkKind::Zone),
            "scanner" => Some(MarkKind::Scanner),
            _ => None,
        }
    }
}

/// A zone or scanner placed on the plan.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FloorMark {
    pub kind: MarkKind,
    pub name: String,
    /// From the plan's left edge, as a fraction of its width (0 to 1).
    pub x: f64,
    /// From the plan's top edge, as a fraction of its height (0 to 1).
    pub y: f64,
}

/// A zone's figures over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneFigures {
    pub zone: String,
    /// Visits with time in the zone during the period.
    pub visits: u64,
    /// A visit's time in the zone during the period (all its stays there), on average.
    pub average_dwell_s: Option<f64>,
}

impl Store {
    /// The plan's image, if the owner uploaded one.
    pub fn floor_plan(&self) -> anyhow::Result<Option<FloorPlan>> {
        Ok(self
            .conn
            .query_row(
                "SELECT content_type, image, updated_at_ms FROM floor_plan WHERE id = 1",
                [],
                |r| {
                    Ok(FloorPlan {
                        content_type: r.get(0)?,
                        image: r.get(1)?,
                        updated_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Whether there is a plan, without reading its image.
    pub fn has_floor_plan(&self) -> anyhow::Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM floor_plan)", [], |r| r.get(0))?)
    }

    /// Replaces the plan's image. The marks stay: a better picture of the same floor keeps
    /// them where they were.
    pub fn save_floor_plan(&mut self, plan: &FloorPlan) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO floor_plan (id, content_type, image, updated_at_ms) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET content_type = ?1, image = ?2, updated_at_ms = ?3",
            params![plan.content_type, plan.image, plan.updated_at_ms],
        )?;
        Ok(())
    }

    /// Removes the plan's image (not the marks); returns whether there was one.
    pub fn delete_floor_plan(&mut self) -> anyhow::Result<bool> {
        Ok(self.conn.execute("DELETE FROM floor_plan", [])? > 0)
    }

    /// Places a mark, or moves it if its kind and name are already on the plan.
    pub fn set_floor_mark(&mut self, mark: &FloorMark) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO floor_marks (kind, name, x, y) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, name) DO UPDATE SET x = ?3, y = ?4",
            params![mark.kind.as_str(), mark.name, mark.x, mark.y],
        )?;
        Ok(())
    }

    /// Removes a mark; returns whether it was there.
    pub fn delete_floor_mark(&mut self, kind: MarkKind, name: &str) -> anyhow::Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM floor_marks WHERE kind = ?1 AND name = ?2",
            params![kind.as_str(), name],
        )? > 0)
    }

    /// Every mark, zones first, by name.
    pub fn floor_marks(&self) -> anyhow::Result<Vec<FloorMark>> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, name, x, y FROM floor_marks ORDER BY kind DESC, name")?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(0)?;
            Ok(FloorMark {
                // The table's CHECK admits nothing else.
                kind: MarkKind::parse(&kind).unwrap_or(MarkKind::Zone),
                name: r.get(1)?,
                x: r.get(2)?,
                y: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per zone, the visits with time there between `since` and `now` and their average time
    /// there within that period; open stays count up to `now`. A stay left open by a crash
    /// (its visit closed without it) ends with its visit.
    pub fn zone_figures(&self, since: Millis, now: Millis) -> anyhow::Result<Vec<ZoneFigures>> {
        let mut stmt = self.conn.prepare(
            "SELECT zone, count(DISTINCT visit_id), sum(max(0, min(end_ms, ?2) - max(from_ms, ?1)))
             FROM (SELECT s.zone, s.visit_id, s.from_ms,
                          coalesce(s.to_ms, v.left_at_ms, ?2) AS end_ms
                   FROM zone_stays s JOIN visits v USING (visit_id)
                   WHERE s.from_ms <= ?2)
             WHERE end_ms >= ?1
             GROUP BY zone ORDER BY zone",
        )?;
        let rows = stmt.query_map(params![since as i64, now as i64], |r| {
            let visits: u64 = r.get(1)?;
            let total_ms: i64 = r.get(2)?;
            Ok(ZoneFigures {
                zone: r.get(0)?,
                visits,
                average_dwell_s: (visits > 0).then(|| total_ms as f64 / 1000.0 / visits as f64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Starts a visit's stay in `zone` at `at`.
pub(super) fn open_stay(
    conn: &Connection,
    visit_id: &str,
    zone: &str,
    at: Millis,
) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO zone_stays (visit_id, zone, from_ms) VALUES (?1, ?2, ?3)",
        params![visit_id, zone, at],
    )?;
    Ok(())
}

/// Ends a visit's open stay at `at` (never before it started). A visit open since before
/// stays were kept has none, which is fine.
pub(super) fn close_stay(conn: &Connection, visit_id: &str, at: Millis) -> anyhow::Result<()> {
    conn.execute(
        "UPDATE zone_stays SET to_ms = max(from_ms, ?2) WHERE visit_id = ?1 AND to_ms IS NULL",
        params![visit_id, at],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::events::{CustomerArrived, CustomerLeft, ZoneChanged};
    use crate::resolve::CustomerId;

    fn store_with_customers(dir: &tempfile::TempDir) -> (Store, Vec<CustomerId>) {
        let mut store = Store::open(&dir.path().join("edge.db")).unwrap();
        let csv = dir.path().join("c.csv");
        std::fs::write(&csv, "customer_ref,display_name\nC1,Minji\nC2,Joon\n").unwrap();
        store.import_customers(&csv).unwrap();
        let ids = store.customers().unwrap().iter().map(|c| c.id).collect();
        (store, ids)
    }

    fn arrive(store: &mut Store, customer: CustomerId, zone: &str, at: Millis) -> Uuid {
        let visit_id = Uuid::now_v7();
        store
            .record_arrival(&CustomerArrived {
                visit_id,
                customer,
                zone: zone.into(),
                arrived_at_ms: at,
            })
            .unwrap();
        visit_id
    }

    fn mv(
        store: &mut Store,
        visit_id: Uuid,
        customer: CustomerId,
        from: &str,
        to: &str,
        at: Millis,
    ) {
        store
            .record_zone_change(&ZoneChanged {
                visit_id,
                customer,
                from_zone: from.into(),
                zone: to.into(),
                at_ms: at,
            })
            .unwrap();
    }

    fn leave(store: &mut Store, visit_id: Uuid, customer: CustomerId, zone: &str, at: Millis) {
        store
            .record_departure(&CustomerLeft {
                visit_id,
                customer,
                zone: zone.into(),
                arrived_at_ms: 0,
                left_at_ms: at,
                dwell_s: 0,
            })
            .unwrap();
    }

    fn stays(store: &Store) -> Vec<(String, Millis, Option<Millis>)> {
        let mut stmt = store
            .conn
            .prepare("SELECT zone, from_ms, to_ms FROM zone_stays ORDER BY from_ms, rowid")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn figures(store: &Store, since: Millis, now: Millis) -> Vec<(String, u64, Option<f64>)> {
        store
            .zone_figures(since, now)
            .unwrap()
            .into_iter()
            .map(|f| (f.zone, f.visits, f.average_dwell_s))
            .collect()
    }

    #[test]
    fn a_visit_leaves_one_stay_per_zone_it_was_in_and_a_late_event_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, c) = store_with_customers(&dir);
        let visit = arrive(&mut store, c[0], "door", 1_000);
        mv(&mut store, visit, c[0], "door", "counter", 5_000);
        leave(&mut store, visit, c[0], "counter", 65_000);
        // Events after the end (a late move, a second departure) leave the stays alone.
        mv(&mut store, visit, c[0], "counter", "terrace", 70_000);
        leave(&mut store, visit, c[0], "terrace", 80_000);
        assert_eq!(
            stays(&store),
            [
                ("door".to_string(), 1_000, Some(5_000)),
                ("counter".to_string(), 5_000, Some(65_000)),
            ]
        );
        // The same arrival recorded twice (a retry) opens no second stay.
        store
            .record_arrival(&CustomerArrived {
                visit_id: visit,
                customer: c[0],
                zone: "door".into(),
                arrived_at_ms: 1_000,
            })
            .unwrap();
        assert_eq!(stays(&store).len(), 2);
    }

    #[test]
    fn zone_figures_count_visits_and_clip_their_time_to_the_period() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, c) = store_with_customers(&dir);
        // Yesterday's visit, into today: only today's part counts.
        let night = arrive(&mut store, c[0], "counter", 50_000);
        leave(&mut store, night, c[0], "counter", 130_000);
        // Today: C2 goes door -> counter -> door and is still at the door at 200 s.
        let today = arrive(&mut store, c[1], "door", 110_000);
        mv(&mut store, today, c[1], "door", "counter", 120_000);
        mv(&mut store, today, c[1], "counter", "door", 150_000);
        let since = 100_000;
        let now = 200_000;
        assert_eq!(
            figures(&store, since, now),
            [
                // C1 30 s today, C2 30 s: both counted once.
                ("counter".to_string(), 2, Some(30.0)),
                // C2: 10 s, then 50 s open up to now, one visit.
                ("door".to_string(), 1, Some(60.0)),
            ]
        );
        // Before the day began: nothing of today.
        assert_eq!(figures(&store, 0, 40_000), []);
    }

    #[test]
    fn a_stay_left_open_by_a_crash_ends_with_its_visit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, c) = store_with_customers(&dir);
        arrive(&mut store, c[0], "counter", 10_000);
        assert_eq!(store.close_interrupted_visits(&[]).unwrap(), 1);
        // The visit closed at its arrival (dwell unknown): no time, still a visit there.
        assert_eq!(
            figures(&store, 0, 1_000_000),
            [("counter".to_string(), 1, Some(0.0))]
        );
    }

    #[test]
    fn stays_go_with_their_visit_and_customer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, c) = store_with_customers(&dir);
        let old = arrive(&mut store, c[0], "counter", 1_000);
        leave(&mut store, old, c[0], "counter", 2_000);
        arrive(&mut store, c[1], "door", 3_000);
        // Retention keeps what the outbox still names: as if the cloud had it all.
        let last = store.outbox(0, 100, u64::MAX).unwrap().last().unwrap().seq;
        store.delete_outbox_up_to(last).unwrap();
        assert_eq!(store.apply_retention(2_500).unwrap(), 1);
        assert_eq!(stays(&store), [("door".to_string(), 3_000, None)]);
        assert!(store.remove_customer("C2").unwrap());
        assert!(stays(&store).is_empty());
    }

    #[test]
    fn a_store_of_the_previous_version_migrates_with_its_open_visit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, c) = store_with_customers(&dir);
        let visit = arrive(&mut store, c[0], "counter", 1_000);
        // Back to the previous release's schema: no floor tables, no device kinds, at
        // version 8.
        store
            .conn
            .execute_batch(
                "DROP TABLE floor_plan; DROP TABLE floor_marks; DROP TABLE zone_stays;
                 ALTER TABLE pos_devices DROP COLUMN kind;
                 PRAGMA user_version = 8;",
            )
            .unwrap();
        drop(store);
        let mut store = Store::open(&dir.path().join("edge.db")).unwrap();
        assert!(stays(&store).is_empty(), "a visit open before has no stay");
        // It counts from its next move; its end closes that stay.
        mv(&mut store, visit, c[0], "counter", "door", 2_000);
        leave(&mut store, visit, c[0], "door", 4_000);
        assert_eq!(stays(&store), [("door".to_string(), 2_000, Some(4_000))]);
        assert_eq!(
            figures(&store, 0, 10_000),
            [("door".to_string(), 1, Some(2.0))]
        );
    }

    #[test]
    fn the_plan_and_marks_are_kept_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = store_with_customers(&dir);
        assert!(!store.has_floor_plan().unwrap());
        assert_eq!(store.floor_plan().unwrap(), None);
        for (content_type, image) in [("image/png", vec![1u8, 2, 3]), ("image/webp", vec![4])] {
            let plan = FloorPlan {
                content_type: content_type.into(),
                image,
                updated_at_ms: 7,
            };
            store.save_floor_plan(&plan).unwrap();
            assert_eq!(store.floor_plan().unwrap(), Some(plan));
        }
        let mark = |kind, name: &str, x, y| FloorMark {
            kind,
            name: name.into(),
            x,
            y,
        };
        store
            .set_floor_mark(&mark(MarkKind::Scanner, "local", 0.5, 0.5))
            .unwrap();
        store
            .set_floor_mark(&mark(MarkKind::Zone, "door", 0.1, 0.9))
            .unwrap();
        store
            .set_floor_mark(&mark(MarkKind::Zone, "door", 0.2, 0.8))
            .unwrap();
        // The same name may be a zone and a scanner.
        store
            .set_floor_mark(&mark(MarkKind::Zone, "local", 0.0, 1.0))
            .unwrap();
        assert_eq!(
            store.floor_marks().unwrap(),
            [
                mark(MarkKind::Zone, "door", 0.2, 0.8),
                mark(MarkKind::Zone, "local", 0.0, 1.0),
                mark(MarkKind::Scanner, "local", 0.5, 0.5),
            ]
        );
        assert!(store.delete_floor_mark(MarkKind::Zone, "local").unwrap());
        assert!(!store.delete_floor_mark(MarkKind::Zone, "local").unwrap());
        assert_eq!(store.floor_marks().unwrap().len(), 2);
        assert!(store.delete_floor_plan().unwrap());
        assert!(!store.delete_floor_plan().unwrap());
        assert!(!store.has_floor_plan().unwrap());
        assert_eq!(
            store.floor_marks().unwrap().len(),
            2,
            "marks outlive the image"
        );
    }
}
