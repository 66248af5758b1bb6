//! Puts response keys back in selection order.
//!
//! async-graphql 7 resolves an object's fields concurrently and stores each result as it
//! completes, so a field that waits on the database (`totalCount`) can end up after one that
//! does not. The GraphQL spec asks for the order of the selection set, and people reading
//! responses expect it, so after execution the data is walked once with a plan built from the
//! operation (fragments expanded, duplicate keys merged) and objects that are out of order are
//! rebuilt.

use std::collections::HashMap;

use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, Value};

/// The fragment definitions of a document, by name.
pub type Fragments = HashMap<Name, Positioned<FragmentDefinition>>;

/// Response keys of one selection level, in order, each with the plan for its value.
pub struct Plan<'a> {
    fields: Vec<(&'a str, Plan<'a>)>,
}

impl<'a> Plan<'a> {
    /// The plan of a value selected by `sets` (several when one key is selected repeatedly).
    /// The document must have passed validation, so fragment cycles cannot occur.
    pub fn new(fragments: &'a Fragments, sets: &[&'a SelectionSet]) -> Self {
        plan(fragments, sets)
    }

    /// Puts `value`'s objects in selection order. Pre-rendered JSON (`Value::Binary`) is
    /// written in selection order already and is left alone.
    pub fn apply(&self, value: &mut Value) {
        apply(self, value)
    }
}

fn collect<'a>(
    doc: &'a Fragments,
    set: &'a SelectionSet,
    out: &mut Vec<(&'a str, Vec<&'a SelectionSet>)>,
) {
    for sel in &set.items {
        match &sel.node {
            Selection::Field(f) => {
                let key = f.node.response_key().node.as_str();
                let sub = &f.node.selection_set.node;
                match out.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, subs)) => subs.push(sub),
                    None => out.push((key, vec![sub])),
                }
            }
            Selection::InlineFragment(fr) => collect(doc, &fr.node.selection_set.node, out),
            Selection::FragmentSpread(sp) => {
                if let Some(def) = doc.get(&sp.node.fragment_name.node) {
                    collect(doc, &def.node.selection_set.node, out);
                }
            }
        }
    }
}

fn plan<'a>(doc: &'a Fragments, sets: &[&'a SelectionSet]) -> Plan<'a> {
    let mut keys = Vec::new();
    for set in sets {
        collect(doc, set, &mut keys);
    }
    Plan {
        fields: keys
            .into_iter()
            .map(|(k, subs)| (k, plan(doc, &subs)))
            .collect(),
    }
}

fn apply(plan: &Plan<'_>, value: &mut Value) {
    match value {
        Value::List(items) => items.iter_mut().for_each(|v| apply(plan, v)),
        Value::Object(map) => {
            for (key, sub) in &plan.fields {
                if !sub.fields.is_empty()
                    && let Some(v) = map.get_mut(*key)
                {
                    apply(sub, v);
                }
            }
            let wanted = plan
                .fields
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| map.contains_key(*k));
            if !map.keys().map(|k| k.as_str()).eq(wanted) {
                let mut old = std::mem::take(map);
                for (key, _) in &plan.fields {
                    if let Some((name, v)) = old.shift_remove_entry(*key) {
                        map.insert(name, v);
                    }
                }
                map.extend(old);
            }
        }
        _ => {}
    }
}

/// Reorders `data` to follow the selected operation of `doc`. Only call it for a document that
/// passed validation (non-null data), so fragment cycles cannot occur.
pub fn restore(doc: &ExecutableDocument, operation_name: Option<&str>, data: &mut Value) {
    let Some(op) = super::operation(doc, operation_name) else {
        return;
    };
    apply(&plan(&doc.fragments, &[&op.selection_set.node]), data);
}
