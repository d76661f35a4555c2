//! `cascade migrate sled-to-postgres`: copies an embedded installation's records into an empty
//! PostgreSQL database, every tree in one transaction (all or nothing), and moves PostgreSQL's id
//! sequence past every id sled gave, so new jobs queue after the copied ones.

use std::path::Path;

use super::kv::{transaction, TREES};
use super::{Store, StoreError};

/// Copies `data_dir/db` into the database at `url`; returns how many records each tree had.
/// Refuses a database that already holds records. The server must be stopped (sled allows one
/// process at a time and says so).
pub fn sled_to_postgres(data_dir: &Path, url: &str) -> Result<Vec<(&'static str, usize)>, StoreError> {
    let from = Store::open(&data_dir.join("db"))?;
    let to = Store::connect(url)?;
    for name in TREES {
        if !to.db.tree(name)?.is_empty()? {
            return Err(StoreError::Refused(format!("the database already holds records (tree {name}); copy into an empty one")));
        }
    }
    let mut copied = Vec::new();
    let mut sources = Vec::new();
    for name in TREES {
        let entries = from.db.tree(name)?.entries()?;
        copied.push((*name, entries.len()));
        sources.push(entries);
    }
    let targets = TREES.iter().map(|name| to.db.tree(name)).collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<_> = targets.iter().collect();
    transaction(&refs, |t| {
        for (tree, entries) in t.iter().zip(&sources) {
            for (k, v) in entries {
                tree.insert(k, v.clone())?;
            }
        }
        Ok(())
    })?;
    to.db.advance_ids_to(from.db.generate_id()?)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyMaterial, LiveStream, VideoRecord, Visibility};
    use crate::store::testing::{drop_database, postgres_server};

    #[test]
    fn an_embedded_installation_is_copied_whole_and_only_into_an_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyMaterial::generate();
        {
            let s = Store::open(&dir.path().join("db")).unwrap();
            s.create(&VideoRecord::new("a", Some("first".into()), None, 3), &key).unwrap();
            s.create(&VideoRecord::new("b", None, None, 4), &KeyMaterial::generate()).unwrap();
            s.add_live(&LiveStream::new("l", "u1", "L".into(), Visibility::Public)).unwrap();
        }
        let server = postgres_server();
        let name = format!("cascade_unit_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{server}/{name}");
        let copied = sled_to_postgres(dir.path(), &url);
        let check = || -> Result<(), String> {
            let copied = copied.map_err(|e| e.to_string())?;
            assert!(copied.contains(&("videos", 2)) && copied.contains(&("jobs", 2)) && copied.contains(&("live", 1)), "{copied:?}");
            let pg = Store::connect(&url).map_err(|e| e.to_string())?;
            assert_eq!(pg.get("a").unwrap().unwrap().title, "first");
            assert_eq!(pg.key("a").unwrap(), Some(key.clone()));
            assert_eq!(pg.live("l").unwrap().unwrap().title, "L");
            // New jobs queue after the copied ones.
            let seqs: Vec<u64> = pg.jobs().unwrap().iter().map(|j| j.seq).collect();
            let new = pg.create(&VideoRecord::new("c", None, None, 1), &KeyMaterial::generate()).unwrap();
            assert!(seqs.iter().all(|&s| s < new.seq), "{seqs:?} then {}", new.seq);
            assert_eq!(pg.claim_next().unwrap().unwrap().0.video_id, "a");
            drop(pg);
            let again = sled_to_postgres(dir.path(), &url);
            assert!(matches!(again, Err(StoreError::Refused(_))), "{again:?}");
            Ok(())
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        drop_database(&server, &name);
        outcome.unwrap().unwrap();
    }

    /// A tree the store opens but the copy does not know would be left behind silently.
    #[test]
    fn the_copy_knows_every_tree_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let super::super::kv::Engine::Sled(db) = &s.db else { unreachable!() };
        let mut opened: Vec<String> =
            db.tree_names().iter().map(|n| String::from_utf8_lossy(n).into_owned()).filter(|n| n != "__sled__default").collect();
        opened.sort();
        let mut known: Vec<String> = TREES.iter().map(|n| n.to_string()).collect();
        known.sort();
        assert_eq!(opened, known);
    }
}
