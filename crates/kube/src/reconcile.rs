//! The reconcile decision, pure: from what the cluster wants stored and what the datastore
//! holds, the operations that make the datastore match, and the conflicts to report.
//!
//! Rules:
//! - a desired key that is absent is created (precondition: still absent);
//! - a desired key that the controller owns is updated if its object differs (precondition:
//!   the mod revision it was read at), else left alone;
//! - a key owned by someone else (`palisade apply`, or a value the controller cannot decode)
//!   is never written: it is a [`Conflict`];
//! - a key the controller owns that is not desired is deleted (precondition: mod revision);
//! - keys not owned by the controller and not desired are not the controller's business.
//!
//! The caller chooses the scope: both maps must cover the same set of keys (the whole layout
//! after a relist, or the keys of the objects an event touched).

use std::collections::BTreeMap;

use palisade_store::{Op, Precondition, Revision, StoredObject, OWNER_CONTROLLER};

/// What the datastore holds at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub mod_revision: Revision,
    pub state: CurrentState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
// Nearly every value is the large variant: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum CurrentState {
    /// Written by the controller.
    Owned(StoredObject),
    /// Written by someone else (the owner's name).
    Foreign(String),
    /// A value that does not decode (the reason): nobody can say whose it is.
    Undecodable(String),
}

impl Current {
    /// Reads one stored value.
    pub fn decode(key: &str, value: &[u8], mod_revision: Revision) -> Current {
        let state = match palisade_store::Record::decode(key, value) {
            Ok(rec) if rec.owner == OWNER_CONTROLLER => CurrentState::Owned(rec.object),
            Ok(rec) => CurrentState::Foreign(rec.owner),
            Err(e) => CurrentState::Undecodable(e.to_string()),
        };
        Current {
            mod_revision,
            state,
        }
    }

    pub fn is_owned(&self) -> bool {
        matches!(self.state, CurrentState::Owned(_))
    }
}

/// One write the plan calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        key: String,
        object: StoredObject,
    },
    Update {
        key: String,
        object: StoredObject,
        mod_revision: Revision,
    },
    Delete {
        key: String,
        mod_revision: Revision,
    },
}

impl Action {
    pub fn key(&self) -> &str {
        match self {
            Action::Create { key, .. }
            | Action::Update { key, .. }
            | Action::Delete { key, .. } => key,
        }
    }

    /// `create`, `update` or `delete` (the metrics label).
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::Update { .. } => "update",
            Action::Delete { .. } => "delete",
        }
    }

    /// The datastore operation, with the precondition that makes it safe.
    pub fn to_op(&self) -> palisade_store::Result<Op> {
        Ok(match self {
            Action::Create { key, object } => {
                Op::put(key.clone(), object.encode(OWNER_CONTROLLER)?).when(Precondition::Absent)
            }
            Action::Update {
                key,
                object,
                mod_revision,
            } => Op::put(key.clone(), object.encode(OWNER_CONTROLLER)?)
                .when(Precondition::ModRevision(*mod_revision)),
            Action::Delete { key, mod_revision } => {
                Op::delete(key.clone()).when(Precondition::ModRevision(*mod_revision))
            }
        })
    }
}

/// A desired key the controller may not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: String,
    /// Who holds it: an owner name, or why the value could not be read.
    pub holder: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In key order.
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.conflicts.is_empty()
    }
}

/// The plan that makes `current` match `desired` (see the module docs).
pub fn plan(desired: &BTreeMap<String, StoredObject>, current: &BTreeMap<String, Current>) -> Plan {
    let mut out = Plan::default();
    let mut d = desired.iter().peekable();
    let mut c = current.iter().peekable();
    loop {
        let order = match (d.peek(), c.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((dk, _)), Some((ck, _))) => dk.cmp(ck),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((key, object)) = d.next() {
                    out.actions.push(Action::Create {
                        key: key.clone(),
                        object: object.clone(),
                    });
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((key, cur)) = c.next() {
                    if cur.is_owned() {
                        out.actions.push(Action::Delete {
                            key: key.clone(),
                            mod_revision: cur.mod_revision,
                        });
                    }
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((key, want)), Some((_, cur))) = (d.next(), c.next()) {
                    match &cur.state {
                        CurrentState::Owned(have) if have == want => {}
                        CurrentState::Owned(_) => out.actions.push(Action::Update {
                            key: key.clone(),
                            object: want.clone(),
                            mod_revision: cur.mod_revision,
                        }),
                        CurrentState::Foreign(owner) => out.conflicts.push(Conflict {
                            key: key.clone(),
                            holder: format!("owner {owner:?}"),
                        }),
                        CurrentState::Undecodable(why) => out.conflicts.push(Conflict {
                            key: key.clone(),
                            holder: format!("an unreadable value ({why})"),
                        }),
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Endpoint, EndpointId, Namespace};

    fn ns(name: &str) -> StoredObject {
        StoredObject::Namespace(Namespace::implicit(name))
    }

    fn ep(ns: &str, name: &str, node: Option<&str>, ip: &str) -> StoredObject {
        StoredObject::Endpoint(Endpoint {
            id: EndpointId::new(ns, name),
            node: node.map(Into::into),
            labels: Default::default(),
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
        })
    }

    fn key(o: &StoredObject) -> String {
        o.key().unwrap()
    }

    fn desired(objs: &[StoredObject]) -> BTreeMap<String, StoredObject> {
        objs.iter().map(|o| (key(o), o.clone())).collect()
    }

    fn owned(o: &StoredObject, rev: Revision) -> (String, Current) {
        (
            key(o),
            Current {
                mod_revision: rev,
                state: CurrentState::Owned(o.clone()),
            },
        )
    }

    fn foreign(k: &str, owner: &str, rev: Revision) -> (String, Current) {
        (
            k.to_string(),
            Current {
                mod_revision: rev,
                state: CurrentState::Foreign(owner.into()),
            },
        )
    }

    #[test]
    fn empty_datastore_creates_everything_in_key_order() {
        let want = desired(&[ns("b"), ns("a"), ep("a", "p", Some("n1"), "10.0.0.1")]);
        let p = plan(&want, &BTreeMap::new());
        let keys: Vec<&str> = p.actions.iter().map(Action::key).collect();
        assert_eq!(
            keys,
            vec![
                "/palisade/v1/endpoints/n1/a/p",
                "/palisade/v1/namespaces/a",
                "/palisade/v1/namespaces/b"
            ]
        );
        assert!(p.actions.iter().all(|a| a.verb() == "create"));
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn in_sync_means_nothing_to_do() {
        let objs = [ns("a"), ep("a", "p", Some("n1"), "10.0.0.1")];
        let cur = objs.iter().map(|o| owned(o, 7)).collect();
        assert!(plan(&desired(&objs), &cur).is_empty());
    }

    #[test]
    fn changed_object_is_updated_at_the_revision_it_was_read() {
        let old = ep("a", "p", Some("n1"), "10.0.0.1");
        let new = ep("a", "p", Some("n1"), "10.0.0.2");
        let cur = [owned(&old, 42)].into_iter().collect();
        let p = plan(&desired(std::slice::from_ref(&new)), &cur);
        assert_eq!(
            p.actions,
            vec![Action::Update {
                key: key(&new),
                object: new,
                mod_revision: 42
            }]
        );
    }

    #[test]
    fn owned_keys_the_cluster_no_longer_has_are_deleted() {
        let gone = ns("gone");
        let stay = ns("stay");
        let cur = [owned(&gone, 3), owned(&stay, 4)].into_iter().collect();
        let p = plan(&desired(&[stay]), &cur);
        assert_eq!(
            p.actions,
            vec![Action::Delete {
                key: key(&gone),
                mod_revision: 3
            }]
        );
    }

    #[test]
    fn a_scheduled_pod_moves_from_unscheduled_to_its_node() {
        let before = ep("a", "p", None, "10.0.0.1");
        let after = ep("a", "p", Some("n1"), "10.0.0.1");
        let cur = [owned(&before, 5)].into_iter().collect();
        let p = plan(&desired(std::slice::from_ref(&after)), &cur);
        assert_eq!(
            p.actions,
            vec![
                Action::Delete {
                    key: "/palisade/v1/endpoints/_unscheduled/a/p".into(),
                    mod_revision: 5
                },
                Action::Create {
                    key: key(&after),
                    object: after
                },
            ]
        );
    }

    #[test]
    fn objects_of_other_owners_are_never_touched() {
        let wanted = ns("shared");
        let cur = [
            foreign(&key(&wanted), "palisade-apply", 9),
            foreign("/palisade/v1/namespaces/by-hand", "palisade-apply", 10),
        ]
        .into_iter()
        .collect();
        let p = plan(&desired(std::slice::from_ref(&wanted)), &cur);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(
            p.conflicts,
            vec![Conflict {
                key: key(&wanted),
                holder: "owner \"palisade-apply\"".into()
            }]
        );
    }

    #[test]
    fn unreadable_values_are_conflicts_not_overwritten_or_deleted() {
        let k = "/palisade/v1/namespaces/x";
        let cur: BTreeMap<String, Current> = [(k.to_string(), Current::decode(k, b"{oops", 2))]
            .into_iter()
            .collect();
        assert!(plan(&BTreeMap::new(), &cur).is_empty());
        let p = plan(&desired(&[ns("x")]), &cur);
        assert!(p.actions.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert!(
            p.conflicts[0].holder.contains("unreadable"),
            "{:?}",
            p.conflicts
        );
    }

    #[test]
    fn decode_tells_owners_apart() {
        let o = ns("a");
        let k = key(&o);
        let mine = Current::decode(&k, &o.encode(OWNER_CONTROLLER).unwrap(), 1);
        assert_eq!(mine.state, CurrentState::Owned(o.clone()));
        let theirs = Current::decode(&k, &o.encode("palisade-apply").unwrap(), 1);
        assert_eq!(theirs.state, CurrentState::Foreign("palisade-apply".into()));
    }

    #[test]
    fn ops_carry_their_preconditions() {
        let o = ns("a");
        let create = Action::Create {
            key: key(&o),
            object: o.clone(),
        };
        assert_eq!(create.to_op().unwrap().precondition(), Precondition::Absent);
        let update = Action::Update {
            key: key(&o),
            object: o.clone(),
            mod_revision: 8,
        };
        assert_eq!(
            update.to_op().unwrap().precondition(),
            Precondition::ModRevision(8)
        );
        let delete = Action::Delete {
            key: key(&o),
            mod_revision: 9,
        };
        let op = delete.to_op().unwrap();
        assert_eq!(op.precondition(), Precondition::ModRevision(9));
        assert!(matches!(op, Op::Delete { .. }));
        match update.to_op().unwrap() {
            Op::Put { value, .. } => {
                let rec = palisade_store::Record::decode(&key(&o), &value).unwrap();
                assert_eq!(rec.owner, OWNER_CONTROLLER);
                assert_eq!(rec.object, o);
            }
            other => panic!("expected a put, got {other:?}"),
        }
    }

    #[test]
    fn mixed_scope_handles_every_case_at_once() {
        let same = ns("same");
        let changed_old = ep("a", "changed", Some("n1"), "10.0.0.1");
        let changed_new = ep("a", "changed", Some("n1"), "10.0.0.9");
        let new = ep("a", "new", Some("n2"), "10.0.0.3");
        let gone = ep("a", "gone", Some("n1"), "10.0.0.4");
        let cur = [
            owned(&same, 1),
            owned(&changed_old, 2),
            owned(&gone, 3),
            foreign("/palisade/v1/endpoints/n1/a/manual", "palisade-apply", 4),
        ]
        .into_iter()
        .collect();
        let p = plan(&desired(&[same, changed_new, new]), &cur);
        let verbs: Vec<(&str, &str)> = p.actions.iter().map(|a| (a.verb(), a.key())).collect();
        assert_eq!(
            verbs,
            vec![
                ("update", "/palisade/v1/endpoints/n1/a/changed"),
                ("delete", "/palisade/v1/endpoints/n1/a/gone"),
                ("create", "/palisade/v1/endpoints/n2/a/new"),
            ]
        );
        assert!(p.conflicts.is_empty());
    }
}
