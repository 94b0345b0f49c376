//! Tests of the PostgreSQL store's own concerns: migrations and what its
//! messages say about the database. The contract is in `contract_tests`.

use super::*;

#[test]
fn migrations_are_recorded_once_and_a_newer_schema_is_refused() {
    let url = crate::pg_test_cluster::database();
    // Several processes starting at once migrate once.
    std::thread::scope(|s| {
        let opened: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresStore::open(&url).map(drop)))
            .collect();
        for o in opened {
            o.join().unwrap().unwrap();
        }
    });
    let mut admin = postgres::Client::connect(&url, NoTls).unwrap();
    let versions: Vec<i64> = admin
        .query("SELECT version FROM tally_migrations ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = schema::MIGRATIONS.len() as i64;
    assert_eq!(versions, (1..=known).collect::<Vec<_>>());

    admin
        .execute(
            "INSERT INTO tally_migrations (version) VALUES ($1)",
            &[&(known + 1)],
        )
        .unwrap();
    let err = PostgresStore::open(&url).err().expect("a newer schema");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::TooNewDatabase { found, .. } if found == known + 1),
        "{text}"
    );
    assert!(text.contains("this tallyd knows versions up to"), "{text}");
}

#[test]
fn a_refused_connection_names_the_database_and_never_the_password() {
    let dir = crate::pg_test_cluster::socket_dir();
    let url = format!(
        "postgresql://nobody_here:S3cretPassw0rd@/no_such_db?host={}",
        dir.display()
    );
    let err = PostgresStore::open(&url).err().expect("no such role");
    let text = tally_domain::ErrorChain(&err).to_string();
    assert!(text.contains("\"no_such_db\""), "{text}");
    assert!(text.contains("\"nobody_here\""), "{text}");
    assert!(!text.contains("S3cretPassw0rd"), "{text}");
    assert!(!format!("{err:?}").contains("S3cretPassw0rd"));
}
