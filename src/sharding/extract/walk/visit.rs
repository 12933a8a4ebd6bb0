//! Visitors over sqlparser's AST: the subqueries of an expression (each walked as a scope), the
//! number of table factors of a statement, and the first listed table it names.

use std::ops::ControlFlow;

use sqlparser::ast::{ObjectName, Query, SetExpr, TableFactor, Visit, Visitor};

use super::{ScopeId, Walker};
use crate::sharding::extract::last_name;
use crate::sharding::rules::{Rules, ShardedTable};

impl Walker<'_, '_> {
    /// Walks the queries nested in `node` (subqueries of expressions), each as a scope under
    /// `scope`.
    pub(in crate::sharding::extract) fn subqueries<V: Visit>(
        &mut self,
        node: &V,
        scope: Option<ScopeId>,
    ) {
        let mut finder = Subqueries {
            walker: self,
            scope,
            depth: 0,
        };
        let _ = node.visit(&mut finder);
    }
}

/// Finds the queries directly nested in a node (not those nested in them: the walk of each query
/// takes care of its own) and walks them.
struct Subqueries<'w, 'r, 's> {
    walker: &'w mut Walker<'r, 's>,
    scope: Option<ScopeId>,
    depth: usize,
}

impl Visitor for Subqueries<'_, '_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth == 1 {
            self.walker.query(query, self.scope, false);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, _statement: &sqlparser::ast::Statement) -> ControlFlow<()> {
        if self.depth == 0 {
            self.walker
                .refuse_if_listed("a statement nested in an expression");
        }
        ControlFlow::Continue(())
    }
}

/// How many table factors a statement has at any depth (see [`Walker::factors`]).
pub(in crate::sharding::extract) fn count_factors<V: Visit>(node: &V) -> usize {
    struct Count(usize);
    impl Visitor for Count {
        type Break = ();
        fn pre_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<()> {
            self.0 += 1;
            ControlFlow::Continue(())
        }
    }
    let mut count = Count(0);
    let _ = node.visit(&mut count);
    count.0
}

/// The first sharded or reference table the node names anywhere (or something with the name of
/// one, such as a WITH query): without one, a statement cannot be anything but unsharded.
pub(in crate::sharding::extract) fn first_listed<V: Visit>(
    node: &V,
    rules: &Rules,
) -> Option<String> {
    let mut find = Find {
        rules,
        sharded_only: false,
        found: None,
    };
    let _ = node.visit(&mut find);
    find.found.map(|t| t.to_owned())
}

/// The first sharded table the node names anywhere.
pub(in crate::sharding::extract) fn first_sharded<'r, V: Visit>(
    node: &V,
    rules: &'r Rules,
) -> Option<&'r ShardedTable> {
    let mut find = Find {
        rules,
        sharded_only: true,
        found: None,
    };
    let _ = node.visit(&mut find);
    rules.sharded(find.found?)
}

struct Find<'r> {
    rules: &'r Rules,
    sharded_only: bool,
    found: Option<&'r str>,
}

impl<'r> Find<'r> {
    fn check(&mut self, table: &str) -> ControlFlow<()> {
        if let Some(rule) = self.rules.sharded(table) {
            self.found = Some(&rule.table);
            return ControlFlow::Break(());
        }
        if !self.sharded_only {
            if let Some(name) = self.rules.reference_name(table) {
                self.found = Some(name);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Find<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        match last_name(name) {
            Some(table) => self.check(&table),
            None => ControlFlow::Continue(()),
        }
    }

    // `TABLE name` is not a relation to the visitor.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        match query.body.as_ref() {
            SetExpr::Table(table) => {
                self.check(&table.table_name.as_deref().unwrap_or("").to_lowercase())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}
