//! Why a cache missed: which cached expressions of the same workflow are
//! nearest to the one asked for, and how their arguments differ — so a
//! user sees that `period = 7.30001` missed the result cached for `7.3`.
//!
//! Pure functions over expressions: [`differences`] between two, and
//! [`Nearest`], which keeps the closest candidates seen (fewest differing
//! arguments first, then the smallest relative difference of numbers). The
//! API (`api/why.rs`) feeds it the expressions the store holds.

use std::cmp::Ordering;

use oda_protocol::{ExprId, Expression, Value};

/// One argument that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The argument's name.
    pub argument: String,
    /// Its value in the cached expression (`None`: not an argument there).
    pub cached: Option<Value>,
    /// Its value in the expression asked for.
    pub asked: Option<Value>,
}

/// The arguments in which `cached` differs from `asked`, by name.
pub fn differences(asked: &Expression, cached: &Expression) -> Vec<Difference> {
    let mut names: Vec<&String> = asked.args.keys().chain(cached.args.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, c) = (asked.args.get(name), cached.args.get(name));
            (a != c).then(|| Difference {
                argument: name.clone(),
                cached: c.cloned(),
                asked: a.cloned(),
            })
        })
        .collect()
}

/// How far apart two values are: the relative difference of two numbers
/// (at most 1), else 1.
fn gap(d: &Difference) -> f64 {
    let number = |v: &Option<Value>| match v {
        Some(Value::Int(i)) => Some(*i as f64),
        Some(Value::Float(x)) => Some(*x),
        _ => None,
    };
    match (number(&d.cached), number(&d.asked)) {
        (Some(c), Some(a)) => {
            let scale = c.abs().max(a.abs());
            if scale == 0.0 {
                0.0
            } else {
                ((c - a).abs() / scale).min(1.0)
            }
        }
        _ => 1.0,
    }
}

/// A cached expression near the one asked for.
#[derive(Debug, Clone)]
pub struct Near {
    /// Its id.
    pub expr: ExprId,
    /// How its arguments differ from the asked ones.
    pub differences: Vec<Difference>,
    distance: (usize, f64),
}

impl Near {
    fn order(&self, other: &Self) -> Ordering {
        self.distance
            .0
            .cmp(&other.distance.0)
            .then(self.distance.1.total_cmp(&other.distance.1))
            .then(self.expr.cmp(&other.expr))
    }
}

/// The `limit` candidates nearest to `asked` (the expression itself is
/// skipped), nearest first.
#[derive(Debug)]
pub struct Nearest<'a> {
    asked: &'a Expression,
    asked_id: ExprId,
    limit: usize,
    kept: Vec<Near>,
}

impl<'a> Nearest<'a> {
    /// Keep at most `limit` candidates near `asked`.
    pub fn new(asked: &'a Expression, limit: usize) -> Self {
        Self {
            asked,
            asked_id: asked.id(),
            limit,
            kept: Vec::new(),
        }
    }

    /// Consider one cached expression of the same workflow.
    pub fn offer(&mut self, id: ExprId, cached: &Expression) {
        if id == self.asked_id || cached.workflow != self.asked.workflow || self.limit == 0 {
            return;
        }
        let differences = differences(self.asked, cached);
        let distance = (differences.len(), differences.iter().map(gap).sum());
        let near = Near {
            expr: id,
            differences,
            distance,
        };
        let at = self
            .kept
            .binary_search_by(|k| k.order(&near))
            .unwrap_or_else(|at| at);
        if at < self.limit {
            self.kept.insert(at, near);
            self.kept.truncate(self.limit);
        }
    }

    /// The kept candidates, nearest first.
    pub fn into_vec(self) -> Vec<Near> {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::WorkflowId;

    fn expr(workflow: u8, args: &[(&str, Value)]) -> Expression {
        Expression {
            workflow: WorkflowId([workflow; 32]),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn a_tiny_change_of_one_number_is_nearest_and_named() {
        let asked = expr(
            1,
            &[("period", Value::Float(7.30001)), ("obs", Value::Int(3))],
        );
        let tiny = expr(1, &[("period", Value::Float(7.3)), ("obs", Value::Int(3))]);
        let far = expr(1, &[("period", Value::Float(20.0)), ("obs", Value::Int(3))]);
        let two = expr(1, &[("period", Value::Float(7.3)), ("obs", Value::Int(4))]);
        let other_workflow = expr(
            2,
            &[("period", Value::Float(7.30001)), ("obs", Value::Int(3))],
        );
        let mut n = Nearest::new(&asked, 2);
        for e in [&two, &far, &other_workflow, &asked, &tiny] {
            n.offer(e.id(), e);
        }
        let kept = n.into_vec();
        assert_eq!(
            kept.iter().map(|k| k.expr).collect::<Vec<_>>(),
            vec![tiny.id(), far.id()],
            "fewest differences first, then the smallest relative difference; the asked expression and other workflows skipped"
        );
        assert_eq!(
            kept[0].differences,
            vec![Difference {
                argument: "period".into(),
                cached: Some(Value::Float(7.3)),
                asked: Some(Value::Float(7.30001)),
            }]
        );
    }

    #[test]
    fn arguments_present_on_one_side_only_differ() {
        let asked = expr(1, &[("a", Value::Int(1)), ("b", Value::Str("x".into()))]);
        let cached = expr(1, &[("a", Value::Int(1)), ("c", Value::Bool(true))]);
        let d = differences(&asked, &cached);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].argument, "b");
        assert_eq!(d[0].cached, None);
        assert_eq!(d[1].argument, "c");
        assert_eq!(d[1].asked, None);
        assert!(differences(&asked, &asked).is_empty());
    }
}
