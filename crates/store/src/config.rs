//! How to reach the database: the subset of `panda_server.cfg` the store needs.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Parses upstream's `backend` key. `postgresql` is accepted as a synonym.
    pub fn parse(value: &str) -> Option<Backend> {
        match value.trim().to_ascii_lowercase().as_str() {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DbConfig {
    pub backend: Backend,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// PostgreSQL database name, or the SQLite file path.
    pub name: String,
    /// PostgreSQL schema holding the PanDA tables (`schemaPANDA`), lower-cased.
    pub schema: String,
    /// The schema of the tables upstream keeps apart from the jobs (`schemaMETA`: `users`,
    /// `usercacheusage`), lower-cased; empty means `schema`.
    pub meta_schema: String,
    /// The schema of the archive (`schemaPANDAARCH`: `jobsarchived`, `filestable_arch`, ...),
    /// lower-cased; empty means `schema`.
    pub arch_schema: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    /// Shown in PostgreSQL's `pg_stat_activity`, so operators see which node holds what.
    pub application_name: String,
}

impl DbConfig {
    /// An embedded SQLite database at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> DbConfig {
        DbConfig {
            backend: Backend::Sqlite,
            host: String::new(),
            port: 0,
            user: String::new(),
            password: None,
            name: path.into().to_string_lossy().into_owned(),
            schema: String::new(),
            meta_schema: String::new(),
            arch_schema: String::new(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            application_name: "panda-server".into(),
        }
    }

    /// Checks what the drivers cannot check themselves. The schema name is spliced into
    /// connection options, so it must be a plain identifier.
    pub fn validate(&self) -> Result<()> {
        let needs_schema = self.backend == Backend::Postgres || !self.schema.is_empty();
        if needs_schema && !is_identifier(&self.schema) {
            return Err(StoreError::Config(format!(
                "schemaPANDA {:?} is not a plain SQL identifier",
                self.schema
            )));
        }
        for (key, name) in [
            ("schemaMETA", &self.meta_schema),
            ("schemaPANDAARCH", &self.arch_schema),
        ] {
            if !name.is_empty() && !is_identifier(name) {
                return Err(StoreError::Config(format!(
                    "{key} {name:?} is not a plain SQL identifier"
                )));
            }
        }
        if self.name.is_empty() {
            return Err(StoreError::Config("dbname is empty".into()));
        }
        Ok(())
    }
}

impl DbConfig {
    /// The META schema: `meta_schema`, or the PanDA schema when that is empty.
    pub fn meta(&self) -> &str {
        if self.meta_schema.is_empty() {
            &self.schema
        } else {
            &self.meta_schema
        }
    }

    /// The archive schema: `arch_schema`, or the PanDA schema when that is empty.
    pub fn arch(&self) -> &str {
        if self.arch_schema.is_empty() {
            &self.schema
        } else {
            &self.arch_schema
        }
    }

    /// Every schema the tables live in, the PanDA schema first, each once. This is the
    /// `search_path` of every PostgreSQL connection: statements name tables without a schema,
    /// and each name resolves to the schema that holds it, as upstream lays them out or all in
    /// one.
    pub fn schemas(&self) -> Vec<&str> {
        let mut all: Vec<&str> = Vec::with_capacity(3);
        for name in [self.schema.as_str(), self.meta(), self.arch()] {
            if !name.is_empty() && !all.contains(&name) {
                all.push(name);
            }
        }
        all
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_must_be_plain_identifiers() {
        assert!(is_identifier("doma_panda"));
        assert!(!is_identifier("doma panda"));
        assert!(!is_identifier("x;drop"));
        assert!(!is_identifier(""));
    }
}
