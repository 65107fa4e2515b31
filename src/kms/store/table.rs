//! `Table`: one kind of row held in memory, as a persistent ordered map (cloning a
//! snapshot costs O(1), a change O(log n)) that remembers which rows a change touched, so
//! a commit writes those rows and nothing else.

use std::collections::BTreeSet;
use std::ops::Deref;

use imbl::{OrdMap, OrdSet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Rows of one kind by id. Reads go through `Deref` to the map; every way of changing a
/// row goes through a method here, which marks it dirty.
///
/// A row lives either in no Region (seen by every view of the store) or in one Region's
/// scope (seen only by that Region's servers): `scoped` holds the ids of the second kind,
/// and a view with `scoping` on puts the rows it creates in its Region's scope.
#[derive(Clone)]
pub struct Table<V: Clone> {
    map: OrdMap<String, V>,
    dirty: BTreeSet<String>,
    scoped: OrdSet<String>,
    scoping: bool,
}

impl<V: Clone> Default for Table<V> {
    fn default() -> Self {
        Table {
            map: OrdMap::new(),
            dirty: BTreeSet::new(),
            scoped: OrdSet::new(),
            scoping: false,
        }
    }
}

impl<V: Clone> Deref for Table<V> {
    type Target = OrdMap<String, V>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<V: Clone> Table<V> {
    /// The row `id`, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let v = self.map.get_mut(id)?;
        self.dirty.insert(id.to_string());
        Some(v)
    }

    /// Adds or replaces a row (a new row goes to the view's scope when scoping is on; a
    /// replaced row stays where it was).
    pub fn insert(&mut self, id: String, v: V) -> Option<V> {
        self.dirty.insert(id.clone());
        if self.scoping && !self.map.contains_key(&id) {
            self.scoped.insert(id.clone());
        }
        self.map.insert(id, v)
    }

    /// Whether rows this view creates go to its Region's scope.
    pub fn set_scoping(&mut self, on: bool) {
        self.scoping = on;
    }

    /// Whether row `id` lives in the view's Region scope.
    pub fn is_scoped(&self, id: &str) -> bool {
        self.scoped.contains(id)
    }

    /// After a removed row's tombstone was written: it no longer has a scope.
    pub fn forget_scope(&mut self, id: &str) {
        if !self.map.contains_key(id) {
            self.scoped.remove(id);
        }
    }

    /// Removes a row.
    pub fn remove(&mut self, id: &str) -> Option<V> {
        let old = self.map.remove(id);
        if old.is_some() {
            self.dirty.insert(id.to_string());
        }
        old
    }

    /// Keeps only the rows `keep` accepts (a scan: O(n)).
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &V) -> bool) {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    /// Changes every row `pick` selects (a scan: O(n)); only those are marked.
    pub fn update_where(&mut self, pick: impl Fn(&V) -> bool, mut change: impl FnMut(&mut V)) {
        let ids: Vec<String> = self
            .map
            .iter()
            .filter(|(_, v)| pick(v))
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            if let Some(v) = self.get_mut(&id) {
                change(v);
            }
        }
    }

    /// The ids changed since the last `take_dirty`, without taking them.
    pub fn dirty_ids(&self) -> impl Iterator<Item = &String> {
        self.dirty.iter()
    }

    /// The ids changed since the last `take_dirty`.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// Sets a row as the store holds it (loading: not a change to write back).
    pub fn load(&mut self, id: String, v: Option<V>) {
        self.load_in(id, v, false)
    }

    /// `load` of a row that lives in the view's scope (`scoped`) or in no Region. A view
    /// that holds a scoped row of this id ignores a Region-less row of the same id.
    pub fn load_in(&mut self, id: String, v: Option<V>, scoped: bool) {
        if !scoped && self.scoped.contains(&id) {
            return;
        }
        match v {
            Some(v) => {
                if scoped {
                    self.scoped.insert(id.clone());
                }
                self.map.insert(id, v);
            }
            None => {
                self.map.remove(&id);
                self.scoped.remove(&id);
            }
        }
    }
}

impl<V: Clone + Serialize> Serialize for Table<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.map.iter())
    }
}

impl<'de, V: Clone + DeserializeOwned> Deserialize<'de> for Table<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = std::collections::BTreeMap::<String, V>::deserialize(d)?;
        Ok(Table {
            map: m.into_iter().collect(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_marked_and_only_changes() {
        let mut t: Table<u32> = Table::default();
        t.load("a".into(), Some(1));
        t.load("b".into(), Some(2));
        t.load("c".into(), Some(3));
        assert!(t.take_dirty().is_empty(), "loading is not a change");
        let snapshot = t.clone();
        *t.get_mut("a").unwrap() = 10;
        t.insert("d".into(), 4);
        t.remove("b");
        t.remove("zz");
        assert!(t.get_mut("zz").is_none());
        t.update_where(|v| *v == 3, |v| *v = 30);
        let d: Vec<_> = t.take_dirty().into_iter().collect();
        assert_eq!(d, ["a", "b", "c", "d"]);
        t.retain(|k, _| k != "d");
        assert_eq!(t.take_dirty().into_iter().collect::<Vec<_>>(), ["d"]);
        // the snapshot taken before is untouched
        assert_eq!(snapshot.get("a"), Some(&1));
        assert_eq!(snapshot.len(), 3);
    }
}
