//! The audit log: who did what, when. Append-only (a trigger refuses updates, deletions and
//! truncation). Entries are written in the transaction of the change they record, so a change
//! and its entry are committed together or not at all.
//!
//! An entry names the customer or box acted on by its id, never by name, and holds no
//! personal fields.

use serde::Serialize;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

/// Who acted: a console user, or a command run on the server.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The user's email, or `cli:<OS user>` for a command.
    pub name: String,
    /// The client's address (empty for commands).
    pub client: String,
}

impl Actor {
    /// A command run by the OS user running it.
    pub fn command_line() -> Actor {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Actor {
            name: format!("cli:{user}"),
            client: String::new(),
        }
    }
}

/// Records `action` on `target` with `detail` (no personal fields).
pub async fn record(
    db: &impl GenericClient,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO audit_log (actor, action, target, detail, client) VALUES ($1, $2, $3, $4, $5)",
        &[&actor.name, &action, &target, &detail, &actor.client],
    )
    .await?;
    Ok(())
}

/// An entry as the console shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Entry {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub client: String,
}

/// The newest entries before `before_id` (all with `None`), optionally of one action or
/// actor, newest first.
pub async fn page(
    db: &impl GenericClient,
    before_id: Option<i64>,
    action: Option<&str>,
    actor: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<Entry>> {
    let rows = db
        .query(
            r#"SELECT id, tastesync_rfc3339(at), actor, action, target,
                      detail, client
               FROM audit_log
               WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR action = $2)
                 AND ($3::text IS NULL OR actor = $3)
               ORDER BY id DESC LIMIT $4"#,
            &[&before_id, &action, &actor, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            id: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            detail: r.get(5),
            client: r.get(6),
        })
        .collect())
}
