//! A pooled connection and the statements it has prepared.
//!
//! The statements every run sends (its resume read, its run row and
//! observations) and the sources page's status read are prepared once per
//! connection and kept: the server parses them once and may keep a generic
//! plan, and each call is one round trip instead of two (a statement given
//! as text is prepared, executed and closed every time). Under three
//! replicas at 300 runs a second, parsing and planning were half of the
//! server's time.
//!
//! Invariant: a session's prepared statements are forgotten whenever one of
//! its statements fails, so that a statement a schema change invalidated (an
//! upgraded replica migrated the database under this one) is prepared again
//! on the next call instead of failing until the process restarts.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, NoTls, Row, Statement};
use r2d2_postgres::r2d2::ManageConnection;

/// A connection of the pool and what it prepared.
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) prepared: Prepared,
}

impl Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Session {
    /// Runs `sql`, prepared once for this connection.
    pub(super) fn query_prepared(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let Session { client, prepared } = self;
        let answer = prepared
            .get(client, sql)
            .and_then(|statement| client.query(&statement, params));
        if answer.is_err() {
            prepared.forget();
        }
        answer
    }
}

/// The statements a connection prepared, by their text.
#[derive(Default)]
pub(super) struct Prepared(HashMap<String, Statement>);

impl Prepared {
    /// `sql` prepared on the connection `client` (or a transaction of it)
    /// speaks to: at the first call, then kept.
    pub(super) fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.0.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Forgets (and closes) every statement: after a failure.
    pub(super) fn forget(&mut self) {
        self.0.clear();
    }
}

/// Opens [`Session`]s for the pool, as `r2d2_postgres` opens clients.
pub(super) struct Manager {
    pub(super) config: Config,
}

impl ManageConnection for Manager {
    type Connection = Session;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Session, postgres::Error> {
        Ok(Session {
            client: self.config.connect(NoTls)?,
            prepared: Prepared::default(),
        })
    }

    fn is_valid(&self, session: &mut Session) -> Result<(), postgres::Error> {
        session.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, session: &mut Session) -> bool {
        session.client.is_closed()
    }
}
