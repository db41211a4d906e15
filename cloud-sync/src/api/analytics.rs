//! Chain analytics over a date range, read from the rollups only (`storage::analytics`):
//! visits per day, returning-customer rate, dwell, satisfaction, busiest hours, top items,
//! shops compared. Every role may read them: admins and analysts the whole chain or one
//! shop, managers their shops. Figures only: never a name, a note or a comment.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::IntoParams;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::storage::analytics::{self, Report, Scope};

/// The longest range one call covers, days.
const MAX_DAYS: i64 = 3 * 366;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// First day, YYYY-MM-DD (default: 29 days before `to`).
    pub from: Option<String>,
    /// Last day, inclusive, YYYY-MM-DD (default: today, UTC).
    pub to: Option<String>,
    /// One shop (default: the chain, or a manager's shops).
    pub shop: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/analytics", params(ReportParams), security(("bearer" = [])),
    responses(
    (status = 200, body = Report, description = "the range's figures"),
    (status = 400, body = ErrorBody, description = "a bad date or range"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not your shop")))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ReportParams>, QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 86_400)
        .unwrap_or(0);
    let to = match &params.to {
        Some(text) => parse_day(text).ok_or_else(|| bad_date("to"))?,
        None => today,
    };
    let from = match &params.from {
        Some(text) => parse_day(text).ok_or_else(|| bad_date("from"))?,
        None => to - 29,
    };
    if from > to || to - from >= MAX_DAYS {
        return Err(ApiError::bad_request(format!(
            "from must not be after to, and a range covers at most {MAX_DAYS} days"
        )));
    }
    let scope = match (&params.shop, caller.shop_scope()) {
        (Some(shop), _) => {
            caller.check_shop(shop)?;
            Scope::Shops(vec![shop.clone()])
        }
        (None, Some(shops)) => Scope::Shops(shops.to_vec()),
        (None, None) => Scope::Chain,
    };
    let db = state.db.get().await?;
    let report = analytics::report(&**db, &scope, &format_day(from), &format_day(to)).await?;
    Ok(Json(report))
}

fn bad_date(field: &str) -> ApiError {
    ApiError::bad_request(format!("{field} must be a date as YYYY-MM-DD"))
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is one (years 2000 to 2199).
pub fn parse_day(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &text[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, m, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = (2000..2200).contains(&y)
        && (1..=12).contains(&m)
        && (1..=month_days[(m - 1) as usize]).contains(&d);
    valid.then(|| days_from_civil(y, m, d))
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn format_day(days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_and_format_round_trip() {
        assert_eq!(parse_day("2026-12-02"), Some(20_789));
        assert_eq!(format_day(20_789), "2026-12-02");
        assert_eq!(
            parse_day("2028-02-29").map(format_day).as_deref(),
            Some("2028-02-29")
        );
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-32",
            "+026-01-01",
            "1999-12-31",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        for day in (parse_day("2000-01-01").unwrap()..parse_day("2199-12-31").unwrap()).step_by(97)
        {
            assert_eq!(parse_day(&format_day(day)), Some(day));
        }
    }
}
