//! CSV import for the owner: customers with their tag ids, and EID temporary keys.
//!
//! A file is checked whole and imported in one transaction: any bad row means nothing is
//! imported, and every bad row is reported with its line number.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use rusqlite::{OptionalExtension, params};
use tastesync_shared::TagId;
use tastesync_shared::eid::MAX_EXPONENT;
use tastesync_shared::hexfmt::parse_fixed;

use super::Store;

/// Columns of a customers CSV. `customer_ref` and `display_name` are required.
pub const CUSTOMER_COLUMNS: &[&str] = &[
    "customer_ref",
    "display_name",
    "tier",
    "notes",
    "preferences",
    "tag_ids",
];
/// Columns of an EID keys CSV (as `tastesync-cloud eid-keys` prints it). All required.
pub const EID_KEY_COLUMNS: &[&str] = &["customer_ref", "exponent", "epoch", "temporary_key"];

/// What an import wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: usize,
    pub tags: usize,
}

/// One bad row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("{path}: nothing was imported; fix these rows and import again:\n{}", list(.errors))]
    BadRows { path: String, errors: Vec<RowError> },
    #[error("database error, nothing was imported: {0}")]
    Database(#[from] rusqlite::Error),
}

fn list(errors: &[RowError]) -> String {
    errors
        .iter()
        .map(|e| format!("  line {}: {}", e.line, e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

struct Table {
    path: String,
    columns: HashMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn read(path: &Path, known: &[&str], required: &[&str]) -> Result<Table, ImportError> {
        let display = path.display().to_string();
        let unreadable = |message: String| ImportError::Unreadable {
            path: display.clone(),
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_path(path)
            .map_err(|e| unreadable(e.to_string()))?;
        let headers = reader
            .headers()
            .map_err(|e| unreadable(e.to_string()))?
            .clone();
        let mut errors = Vec::new();
        let mut columns = HashMap::new();
        for (i, name) in headers.iter().enumerate() {
            if !known.contains(&name) {
                errors.push(RowError {
                    line: 1,
                    message: format!(
                        "unknown column {name:?}; the columns are {}",
                        known.join(",")
                    ),
                });
            }
            columns.insert(name.to_string(), i);
        }
        for name in required {
            if !columns.contains_key(*name) {
                errors.push(RowError {
                    line: 1,
                    message: format!("the header lacks the required column {name:?}"),
                });
            }
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            match record {
                Ok(r) if r.len() != headers.len() => errors.push(RowError {
                    line: r.position().map_or(0, |p| p.line()),
                    message: format!("{} fields, the header has {}", r.len(), headers.len()),
                }),
                Ok(r) => rows.push((r.position().map_or(0, |p| p.line()), r)),
                Err(e) => errors.push(RowError {
                    line: e.position().map_or(0, |p| p.line()),
                    message: e.to_string(),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ImportError::BadRows {
                path: display,
                errors,
            });
        }
        Ok(Table {
            path: display,
            columns,
            rows,
        })
    }

    fn get<'r>(&self, row: &'r csv::StringRecord, column: &str) -> &'r str {
        self.columns
            .get(column)
            .and_then(|&i| row.get(i))
            .unwrap_or("")
    }

    fn fail(&self, errors: Vec<RowError>) -> ImportError {
        ImportError::BadRows {
            path: self.path.clone(),
            errors,
        }
    }
}

struct CustomerRow<'r> {
    line: u64,
    customer_ref: &'r str,
    display_name: &'r str,
    tier: &'r str,
    notes: &'r str,
    preferences: &'r str,
    tags: Vec<TagId>,
}

const MAX_REF_LEN: usize = 64;
const MAX_TEXT_LEN: usize = 1000;

impl Store {
    /// Imports customers from a CSV file (columns [`CUSTOMER_COLUMNS`]). A customer whose
    /// `customer_ref` exists is updated and their tags replaced by the file's.
    pub fn import_customers(&mut self, path: &Path) -> Result<ImportReport, ImportError> {
        let table = Table::read(path, CUSTOMER_COLUMNS, &["customer_ref", "display_name"])?;
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        let mut refs_seen: HashMap<&str, u64> = HashMap::new();
        let mut tags_seen: HashMap<TagId, u64> = HashMap::new();
        for (line, row) in &table.rows {
            let line = *line;
            let mut fail = |message: String| errors.push(RowError { line, message });
            let customer_ref = table.get(row, "customer_ref");
            let display_name = table.get(row, "display_name");
            if customer_ref.is_empty() || customer_ref.len() > MAX_REF_LEN {
                fail(format!(
                    "customer_ref must be 1 to {MAX_REF_LEN} characters"
                ));
            } else if let Some(first) = refs_seen.insert(customer_ref, line) {
                fail(format!(
                    "customer_ref {customer_ref:?} already appears on line {first}"
                ));
            }
            if display_name.is_empty() {
                fail("display_name is empty".into());
            }
            for column in ["display_name", "tier", "notes", "preferences"] {
                if table.get(row, column).len() > MAX_TEXT_LEN {
                    fail(format!("{column} is longer than {MAX_TEXT_LEN} characters"));
                }
            }
            let mut tags = Vec::new();
            for text in table.get(row, "tag_ids").split(';').map(str::trim) {
                if text.is_empty() {
                    continue;
                }
                match text.parse::<TagId>() {
                    Ok(tag) => {
                        if let Some(first) = tags_seen.insert(tag, line) {
                            fail(format!(
                                "tag {tag} is already given to the customer on line {first}"
                            ));
                        }
                        tags.push(tag);
                    }
                    Err(e) => fail(e.to_string()),
                }
            }
            parsed.push(CustomerRow {
                line,
                customer_ref,
                display_name,
                tier: table.get(row, "tier"),
                notes: table.get(row, "notes"),
                preferences: table.get(row, "preferences"),
                tags,
            });
        }
        if !errors.is_empty() {
            return Err(table.fail(errors));
        }

        let tx = self.write()?;
        let mut report = ImportReport::default();
        for row in &parsed {
            let id: i64 = tx.query_row(
                "INSERT INTO customers (customer_ref, display_name, tier, notes, preferences)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (customer_ref) DO UPDATE SET display_name = excluded.display_name,
                    tier = excluded.tier, notes = excluded.notes, preferences = excluded.preferences
                 RETURNING id",
                params![
                    row.customer_ref,
                    row.display_name,
                    row.tier,
                    row.notes,
                    row.preferences
                ],
                |r| r.get(0),
            )?;
            tx.execute("DELETE FROM tag_bindings WHERE customer_id = ?1", [id])?;
            report.rows += 1;
        }
        // Bindings after all deletions, so tags may move between customers in one file.
        for row in &parsed {
            for tag in &row.tags {
                let text = tag.to_string();
                let owner: Option<String> = tx
                    .query_row(
                        "SELECT c.customer_ref FROM tag_bindings b JOIN customers c ON c.id = b.customer_id
                         WHERE b.tag_id = ?1",
                        [&text],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(owner) = owner {
                    errors.push(RowError {
                        line: row.line,
                        message: format!("tag {text} already belongs to customer {owner}"),
                    });
                    continue;
                }
                tx.execute(
                    "INSERT INTO tag_bindings (tag_id, customer_id)
                     SELECT ?1, id FROM customers WHERE customer_ref = ?2",
                    params![text, row.customer_ref],
                )?;
                report.tags += 1;
            }
        }
        if !errors.is_empty() {
            return Err(table.fail(errors)); // dropping `tx` rolls everything back
        }
        tx.commit()?;
        Ok(report)
    }

    /// Imports EID temporary keys (columns [`EID_KEY_COLUMNS`]) for existing customers.
    pub fn import_eid_keys(&mut self, path: &Path) -> Result<ImportReport, ImportError> {
        let table = Table::read(path, EID_KEY_COLUMNS, EID_KEY_COLUMNS)?;
        let mut errors = Vec::new();
        let mut rows = Vec::new();
        let mut exponents: HashMap<&str, (u8, u64)> = HashMap::new();
        for (line, row) in &table.rows {
            let line = *line;
            let mut fail = |message: String| errors.push(RowError { line, message });
            let customer_ref = table.get(row, "customer_ref");
            let exponent = table
                .get(row, "exponent")
                .parse::<u8>()
                .ok()
                .filter(|k| *k <= MAX_EXPONENT);
            let epoch = table.get(row, "epoch").parse::<u16>().ok();
            let key = parse_fixed::<16>(table.get(row, "temporary_key"));
            if exponent.is_none() {
                fail(format!(
                    "exponent must be a number from 0 to {MAX_EXPONENT}"
                ));
            }
            if epoch.is_none() {
                fail("epoch must be a number from 0 to 65535 (Unix seconds >> 16)".into());
            }
            if key.is_none() {
                fail("temporary_key must be 32 hex digits".into());
            }
            if let Some(k) = exponent {
                match exponents.get(customer_ref) {
                    Some(&(other, first)) if other != k => fail(format!(
                        "exponent {k} differs from {other} given for {customer_ref:?} on line {first}"
                    )),
                    _ => {
                        exponents.insert(customer_ref, (k, line));
                    }
                }
            }
            if let (Some(k), Some(e), Some(key)) = (exponent, epoch, key) {
                rows.push((line, customer_ref, k, e, key));
            }
        }
        if !errors.is_empty() {
            return Err(table.fail(errors));
        }
        let tx = self.write()?;
        let mut report = ImportReport::default();
        for (line, customer_ref, exponent, epoch, key) in rows {
            let id: Option<i64> = tx
                .query_row(
                    "SELECT id FROM customers WHERE customer_ref = ?1",
                    [customer_ref],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else {
                errors.push(RowError {
                    line,
                    message: format!("no customer {customer_ref:?}; import the customer first"),
                });
                continue;
            };
            tx.execute(
                "INSERT INTO eid_tags (customer_id, exponent) VALUES (?1, ?2)
                 ON CONFLICT (customer_id) DO UPDATE SET exponent = excluded.exponent",
                params![id, exponent],
            )?;
            tx.execute(
                "INSERT INTO eid_temporary_keys (customer_id, epoch, temporary_key) VALUES (?1, ?2, ?3)
                 ON CONFLICT (customer_id, epoch) DO UPDATE SET temporary_key = excluded.temporary_key",
                params![id, epoch, key.as_slice()],
            )?;
            report.rows += 1;
        }
        if !errors.is_empty() {
            return Err(table.fail(errors));
        }
        tx.commit()?;
        Ok(report)
    }
}
