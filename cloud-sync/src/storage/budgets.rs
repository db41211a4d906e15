//! Failure budgets: how many failed attempts (claim codes, sign-ins) a client may make in a
//! window before it must wait for the window's end.
//!
//! An attempt is charged *before* it is checked, in one atomic statement, and refunded if it
//! succeeds: parallel guesses cannot slip past the limit while the first ones are still being
//! checked, and no row lock is held while a password is hashed.

use std::time::Duration;

use tokio_postgres::GenericClient;

/// A budget: `allowed` failures per `window`, counted per client within `scope`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub scope: &'static str,
    pub allowed: i32,
    pub window: Duration,
}

/// Claim codes, per client address.
pub const CLAIMS: Budget = Budget {
    scope: "claim",
    allowed: 10,
    window: Duration::from_secs(600),
};
/// Console sign-ins, per client address (an office behind one address has several people).
pub const SIGN_IN_ADDRESS: Budget = Budget {
    scope: "sign-in-address",
    allowed: 30,
    window: Duration::from_secs(900),
};
/// Console sign-ins, per account, whatever the address.
pub const SIGN_IN_ACCOUNT: Budget = Budget {
    scope: "sign-in-account",
    allowed: 10,
    window: Duration::from_secs(900),
};

/// Charges one attempt to `client`. `Err(retry_after_s)` if its budget is spent: the attempt
/// must not be made.
pub async fn charge(
    db: &impl GenericClient,
    budget: &Budget,
    client: &str,
) -> anyhow::Result<Result<(), u64>> {
    // Past the limit the count stays at `allowed + 1`: refused attempts are not counted, so
    // the window ends when it started to.
    let row = db
        .query_one(
            "INSERT INTO failure_counts AS f (scope, client, window_start, failures)
             VALUES ($1, $2, now(), 1)
             ON CONFLICT (scope, client) DO UPDATE SET
                window_start = CASE WHEN f.window_start < now() - make_interval(secs => $3)
                                    THEN now() ELSE f.window_start END,
                failures = CASE WHEN f.window_start < now() - make_interval(secs => $3)
                                THEN 1 ELSE least(f.failures + 1, $4 + 1) END
             RETURNING failures,
                extract(epoch FROM window_start + make_interval(secs => $3) - now())::float8",
            &[
                &budget.scope,
                &client,
                &budget.window.as_secs_f64(),
                &budget.allowed,
            ],
        )
        .await?;
    let (failures, window_left): (i32, f64) = (row.get(0), row.get(1));
    Ok(if failures > budget.allowed {
        Err(window_left.ceil().max(1.0) as u64)
    } else {
        Ok(())
    })
}

/// Gives back the charge of an attempt that succeeded.
pub async fn refund(db: &impl GenericClient, budget: &Budget, client: &str) -> anyhow::Result<()> {
    db.execute(
        "UPDATE failure_counts SET failures = greatest(failures - 1, 0)
         WHERE scope = $1 AND client = $2",
        &[&budget.scope, &client],
    )
    .await?;
    Ok(())
}

/// Forgets windows long over (run now and then).
pub async fn forget_old(db: &impl GenericClient) -> anyhow::Result<u64> {
    Ok(db
        .execute(
            "DELETE FROM failure_counts WHERE window_start < now() - interval '1 day'",
            &[],
        )
        .await?)
}
