//! Versioned warehouse migrations: the SQL files in `sink/migrations/`, applied in order, each
//! recorded in `<db>.schema_migrations` so that running `sink migrate` again applies nothing.
//!
//! Files use `{db}` for the database name (the settings' `clickhouse.database`, `mi` by default),
//! which must be a plain identifier: it is validated, never quoted into SQL from free text.
//! Statements are idempotent (`IF NOT EXISTS`, `MODIFY SETTING`), so a migration interrupted half
//! way can simply run again. Applied files are never edited: a change is a new file.

use clickhouse::Client;

/// One migration file.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/", $name, ".sql")),
        }
    };
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_database_and_dates"),
    migration!(2, "0002_dimensions"),
    migration!(3, "0003_facts"),
    migration!(4, "0004_audit"),
    migration!(5, "0005_audit_dedup"),
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "invalid database name {0:?}: use lowercase letters, digits and '_', starting with a letter or '_'"
    )]
    BadDatabase(String),
    #[error("migration {version} ({name}), statement {statement}: {source}")]
    Statement {
        version: u32,
        name: &'static str,
        statement: usize,
        source: clickhouse::error::Error,
    },
    #[error("reading applied migrations: {0}")]
    Applied(clickhouse::error::Error),
}

/// Whether `name` is safe to use as a database identifier.
pub fn valid_database(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The statements of a migration file, with `{db}` substituted: split at `;` ending a line,
/// comment-only lines dropped.
pub fn statements(sql: &str, database: &str) -> Vec<String> {
    let body: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{db}", database);
    body.split(";\n")
        .map(|s| s.trim().trim_end_matches(';').trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Applies every migration not yet recorded; returns the versions applied now.
pub async fn migrate(client: &Client, database: &str) -> Result<Vec<u32>, MigrateError> {
    if !valid_database(database) {
        return Err(MigrateError::BadDatabase(database.to_owned()));
    }
    let admin = client.clone().with_database("default");
    let applied = applied(&admin, database)
        .await
        .map_err(MigrateError::Applied)?;
    let mut now = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for (i, statement) in statements(m.sql, database).iter().enumerate() {
            admin
                .query(statement)
                .execute()
                .await
                .map_err(|source| MigrateError::Statement {
                    version: m.version,
                    name: m.name,
                    statement: i + 1,
                    source,
                })?;
        }
        admin
            .query(&format!(
                "INSERT INTO {database}.schema_migrations (version, name) VALUES (?, ?)"
            ))
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await
            .map_err(|source| MigrateError::Statement {
                version: m.version,
                name: m.name,
                statement: 0,
                source,
            })?;
        tracing::info!(
            version = m.version,
            name = m.name,
            database,
            "migration applied"
        );
        now.push(m.version);
    }
    Ok(now)
}

async fn applied(admin: &Client, database: &str) -> Result<Vec<u32>, clickhouse::error::Error> {
    let exists: u64 = admin
        .query(
            "SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'",
        )
        .bind(database)
        .fetch_one()
        .await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    admin
        .query(&format!(
            "SELECT DISTINCT version FROM {database}.schema_migrations ORDER BY version"
        ))
        .fetch_all::<u32>()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(valid_database("mi"));
        assert!(valid_database("mi_it_3f2a"));
        assert!(!valid_database("mi; DROP DATABASE x"));
        assert!(!valid_database("Mi"));
        assert!(!valid_database("1mi"));
        assert!(!valid_database(""));
    }

    #[test]
    fn statements_split_on_line_ending_semicolons_and_substitute_the_database() {
        let sql = "-- comment\nCREATE DATABASE IF NOT EXISTS {db};\n\nCREATE TABLE {db}.t (a String DEFAULT ';')\nENGINE = MergeTree ORDER BY a;\n";
        assert_eq!(
            statements(sql, "mi"),
            vec![
                "CREATE DATABASE IF NOT EXISTS mi",
                "CREATE TABLE mi.t (a String DEFAULT ';')\nENGINE = MergeTree ORDER BY a"
            ]
        );
        for m in MIGRATIONS {
            assert!(
                !statements(m.sql, "mi").is_empty(),
                "{} has statements",
                m.name
            );
        }
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "versions ascend");
    }
}
