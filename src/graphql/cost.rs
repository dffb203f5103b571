//! The size of a document after fragment expansion, computed without expanding it.
//!
//! Each fragment is costed once (memoized: expanded fields, aliases, nesting height), so a
//! fragment that doubles itself 30 times costs 30 steps, not 2^30. The nesting is counted
//! across spreads — a selection set, an inline fragment and a spread each go one level down —
//! and refused past `max_depth` *before* recursing, so the walk's own stack depth is bounded by
//! the limit, whatever chain of fragments a document builds.

use std::collections::HashMap;

use apollo_parser::cst;

use super::{fragment_name, GraphqlError, OperationError};

#[derive(Debug, Clone, Copy, Default)]
pub struct Size {
    pub fields: u64,
    pub aliases: u64,
    /// Nesting levels of the set: 1 for a set of leaves, 0 for an empty one.
    pub height: usize,
}

pub struct Cost<'a> {
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    memo: HashMap<String, Size>,
    stack: Vec<String>,
    max_depth: usize,
}

impl<'a> Cost<'a> {
    pub fn new(fragments: &'a HashMap<String, cst::FragmentDefinition>, max_depth: usize) -> Self {
        Self {
            fragments,
            memo: HashMap::new(),
            stack: Vec::new(),
            max_depth,
        }
    }

    fn too_deep(&self) -> GraphqlError {
        GraphqlError::too_deep(self.max_depth)
    }

    /// The size of a selection set at absolute nesting `depth`.
    pub fn of_set(&mut self, set: &cst::SelectionSet, depth: usize) -> Result<Size, GraphqlError> {
        if depth > self.max_depth {
            return Err(self.too_deep());
        }
        let mut total = Size::default();
        for sel in set.selections() {
            let inner = match sel {
                cst::Selection::Field(f) => {
                    let inner = match f.selection_set() {
                        Some(inner) => self.of_set(&inner, depth + 1)?,
                        None => Size::default(),
                    };
                    Size {
                        fields: inner.fields.saturating_add(1),
                        aliases: inner.aliases.saturating_add(u64::from(f.alias().is_some())),
                        height: inner.height,
                    }
                }
                cst::Selection::InlineFragment(i) => match i.selection_set() {
                    Some(inner) => self.of_set(&inner, depth + 1)?,
                    None => Size::default(),
                },
                cst::Selection::FragmentSpread(s) => {
                    self.of_fragment(&fragment_name(&s), depth + 1)?
                }
            };
            total.fields = total.fields.saturating_add(inner.fields);
            total.aliases = total.aliases.saturating_add(inner.aliases);
            total.height = total.height.max(inner.height + 1);
        }
        Ok(total)
    }

    fn of_fragment(&mut self, name: &str, depth: usize) -> Result<Size, GraphqlError> {
        if let Some(c) = self.memo.get(name) {
            // The same verdict as walking it again: its deepest set would sit at
            // `depth + height - 1`.
            if depth + c.height > self.max_depth + 1 {
                return Err(self.too_deep());
            }
            return Ok(*c);
        }
        if self.stack.iter().any(|n| n == name) {
            return Err(OperationError::FragmentCycle(name.to_string()).into());
        }
        let frag = self
            .fragments
            .get(name)
            .ok_or_else(|| OperationError::UnknownFragment(name.to_string()))?;
        let Some(set) = frag.selection_set() else {
            return Ok(Size::default());
        };
        self.stack.push(name.to_string());
        let c = self.of_set(&set, depth)?;
        self.stack.pop();
        self.memo.insert(name.to_string(), c);
        Ok(c)
    }
}
