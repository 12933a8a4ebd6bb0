//! The decision, once the walk is done: spread restrictions along key equalities, group instances
//! into co-located classes, and pick one key, several shards, or a refusal.

use super::{Instance, InstanceId, Spread, Walker};
use crate::sharding::extract::refuse;
use crate::sharding::plan::{Keys, ShardPlan};

impl Walker<'_, '_> {
    /// The plan, from everything the walk found.
    /// `factors`: how many table factors the statement has (`count_factors`).
    pub(in crate::sharding::extract) fn finish(mut self, factors: usize) -> ShardPlan {
        if let Some(refusal) = self.refusal.take() {
            return ShardPlan::Refused(refusal);
        }
        if let Some(table) = self.reference_write.take() {
            // Every copy gets the same statement: it may read only what every shard has alike.
            return match self.instances.is_empty() && self.unsharded.is_none() {
                true if factors == self.factors => ShardPlan::ReferenceWrite,
                _ => ShardPlan::Refused(refuse::write_reference(&table)),
            };
        }
        if factors != self.factors {
            let table = self.instances.first().map_or("", |i| i.rule.table.as_str());
            return ShardPlan::Refused(refuse::cannot_follow(table, "a clause it does not follow"));
        }
        let Some(first) = self.instances.first().map(|i| i.rule) else {
            let reference_only = self.reference_read && self.unsharded.is_none();
            return match reference_only && !self.writes && !self.select_into {
                true => ShardPlan::ReferenceRead,
                false => ShardPlan::Unsharded,
            };
        };
        if let Some(other) = &self.unsharded {
            return ShardPlan::Refused(refuse::mixes_unsharded(first, other));
        }
        if self.select_into {
            return ShardPlan::Refused(refuse::create_as(&first.table));
        }
        if let Some(rows) = self.insert_rows.take() {
            return match self.instances.len() {
                1 => ShardPlan::InsertRows {
                    key_type: first.key_type,
                    rows: rows.into_boxed_slice(),
                },
                _ => ShardPlan::Refused(refuse::insert_rows_with_more(first)),
            };
        }
        self.spread();
        let roots = self.classes();
        let several_classes = roots.iter().any(|r| *r != roots[0]);
        let same_type = self
            .instances
            .iter()
            .all(|i| i.rule.key_type == first.key_type);
        let keys = match same_type {
            true => self.common_keys(several_classes),
            false => None,
        };
        if let Some(keys @ Keys::One(_)) = keys {
            return ShardPlan::Keyed {
                key_type: first.key_type,
                keys,
            };
        }
        if let Some(refusal) = self.several_shards_refusal(&roots) {
            return ShardPlan::Refused(refusal);
        }
        match (keys, self.writes) {
            (Some(keys), _) => ShardPlan::Keyed {
                key_type: first.key_type,
                keys,
            },
            (None, true) => ShardPlan::ScatterWrite {
                refusal: refuse::keyless_write(first),
            },
            (None, false) => ShardPlan::ScatterRead,
        }
    }

    /// Spreads restrictions along links until nothing changes (statements are small).
    fn spread(&mut self) {
        loop {
            let mut changed = false;
            for &(a, b, spread) in &self.links {
                changed |= copy_keys(&mut self.instances, a, b);
                if spread == Spread::Both {
                    changed |= copy_keys(&mut self.instances, b, a);
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// Each instance's class representative: instances linked by key equalities share one.
    fn classes(&self) -> Vec<InstanceId> {
        let mut parent: Vec<InstanceId> = (0..self.instances.len()).collect();
        fn root(parent: &mut [InstanceId], mut i: InstanceId) -> InstanceId {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for &(a, b, _) in &self.links {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra] = rb;
        }
        (0..self.instances.len())
            .map(|i| root(&mut parent, i))
            .collect()
    }

    /// A restriction every instance has. With instances that are not co-located only a single
    /// key will do: on one shard, unrelated subqueries see all their rows; on several, each shard
    /// would answer with its part.
    fn common_keys(&self, several_classes: bool) -> Option<Keys> {
        let (first, rest) = self.instances.split_first()?;
        first
            .keys
            .iter()
            .filter(|k| !several_classes || matches!(k, Keys::One(_)))
            .find(|k| rest.iter().all(|i| i.keys.contains(k)))
            .cloned()
    }

    /// Why the statement cannot run on several shards, each answering for its rows, if it
    /// cannot.
    fn several_shards_refusal(&self, roots: &[InstanceId]) -> Option<Box<str>> {
        for (a, instance) in self.instances.iter().enumerate() {
            let apart = self.instances[a + 1..]
                .iter()
                .zip(&roots[a + 1..])
                .find(|(other, root)| other.scope == instance.scope && **root != roots[a]);
            if let Some((other, _)) = apart {
                return Some(refuse::join_not_on_keys(instance.rule, other.rule));
            }
        }
        for (a, instance) in self.instances.iter().enumerate() {
            let rooted = self
                .instances
                .iter()
                .zip(roots)
                .any(|(i, root)| *root == roots[a] && self.scopes[i.scope].top);
            if !rooted {
                return Some(refuse::nested_not_tied(instance.rule));
            }
        }
        if self.top_intersect_except {
            return Some(refuse::set_operation(self.instances[0].rule));
        }
        None
    }
}

/// Adds `from`'s restrictions to `to`'s; whether any was new.
fn copy_keys(instances: &mut [Instance], from: InstanceId, to: InstanceId) -> bool {
    let new: Vec<Keys> = instances[from]
        .keys
        .iter()
        .filter(|k| !instances[to].keys.contains(k))
        .cloned()
        .collect();
    let changed = !new.is_empty();
    instances[to].keys.extend(new);
    changed
}
