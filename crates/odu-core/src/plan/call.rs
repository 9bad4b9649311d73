//! Calls and the tasks they make: a dependency with literal arguments (`fmt(a,b)`) is its own
//! task, distinct from the recipe called bare.

use std::collections::HashMap;

use super::IngestError;
use super::dump::DumpDependency;
use super::recipe::{Recipe, join};

/// A dependency as a call: the target recipe's index and its literal arguments. Recipes are
/// sorted by namepath, so calls order as (namepath, arguments) would.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Call<'r> {
    pub(super) recipe: usize,
    pub(super) args: Vec<&'r str>,
}

/// The tasks of a closure: one per distinct call of a body-bearing recipe.
pub(super) struct TaskIndex<'c, 'r> {
    /// The distinct calls, grouped by recipe in namepath order and sorted by arguments within a
    /// recipe.
    pub(super) calls: Vec<&'c Call<'r>>,
    /// Where each recipe's calls start: recipe `r`'s are `calls[first[r]..first[r + 1]]`.
    pub(super) first: Vec<usize>,
    /// Each call's id.
    pub(super) ids: Vec<String>,
    /// Each call's task number. Tasks are numbered in id order, so sorting numbers sorts ids;
    /// calls that make the same id share a number, which the caller reports as a duplicate.
    pub(super) number: Vec<usize>,
    /// How many task numbers there are.
    pub(super) count: usize,
}

impl<'c, 'r> TaskIndex<'c, 'r> {
    pub(super) fn new(calls: impl Iterator<Item = &'c Call<'r>> + Clone, recipes: &[Recipe<'_>]) -> Self {
        // A counting sort by recipe, then a sort of each recipe's (few) calls by arguments: far
        // cheaper than comparing whole calls, and the same order.
        let mut first = vec![0; recipes.len() + 1];
        for call in calls.clone() {
            first[call.recipe + 1] += 1;
        }
        for at in 0..recipes.len() {
            first[at + 1] += first[at];
        }
        let mut next = first.clone();
        let mut grouped: Vec<Option<&'c Call<'r>>> = vec![None; first[recipes.len()]];
        for call in calls {
            grouped[next[call.recipe]] = Some(call);
            next[call.recipe] += 1;
        }
        let mut distinct: Vec<&'c Call<'r>> = Vec::with_capacity(grouped.len());
        let mut start = 0;
        for recipe in 0..recipes.len() {
            let group = &mut grouped[first[recipe]..first[recipe + 1]];
            group.sort_unstable_by(|a, b| a.map(|c| &c.args).cmp(&b.map(|c| &c.args)));
            first[recipe] = start;
            for call in group.iter().flatten() {
                if distinct.len() == start || distinct.last().is_none_or(|last| last.args != call.args) {
                    distinct.push(call);
                }
            }
            start = distinct.len();
        }
        first[recipes.len()] = start;

        let ids: Vec<String> =
            distinct.iter().map(|call| call_id(&recipes[call.recipe].namepath, &call.args)).collect();
        // Ids usually come out sorted already (they start with the namepath), so the sort is
        // mostly skipped.
        let mut by_id: Vec<usize> = (0..distinct.len()).collect();
        if !ids.is_sorted() {
            by_id.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
        }
        let mut number = vec![0; distinct.len()];
        let mut count = 0;
        for (at, &call) in by_id.iter().enumerate() {
            if at > 0 && ids[call] != ids[by_id[at - 1]] {
                count += 1;
            }
            number[call] = count;
        }
        let count = if distinct.is_empty() { 0 } else { count + 1 };
        TaskIndex { calls: distinct, first, ids, number, count }
    }

    /// The task number of a call to a body-bearing recipe of the closure.
    pub(super) fn of_call(&self, call: &Call<'r>) -> usize {
        let start = self.first[call.recipe];
        let group = &self.calls[start..self.first[call.recipe + 1]];
        let at = group
            .binary_search_by(|c| c.args.cmp(&call.args))
            .expect("every call of a body-bearing recipe is a task");
        self.number[start + at]
    }

    /// The task numbers of a recipe's calls, sorted.
    pub(super) fn of_recipe(&self, recipe: usize) -> Vec<usize> {
        let mut numbers = self.number[self.first[recipe]..self.first[recipe + 1]].to_vec();
        numbers.sort_unstable();
        numbers.dedup();
        numbers
    }
}

/// `namepath`, or `namepath(a,b)` with each argument's control characters escaped (`\n`, `\t`,
/// `\u{1b}`): an id is printed on one line and names a log file. The command keeps the raw
/// arguments.
fn call_id(namepath: &str, args: &[&str]) -> String {
    if args.is_empty() {
        return namepath.to_string();
    }
    let mut id = String::with_capacity(namepath.len() + 2 + args.iter().map(|a| a.len() + 1).sum::<usize>());
    id.push_str(namepath);
    id.push('(');
    for (at, arg) in args.iter().enumerate() {
        if at > 0 {
            id.push(',');
        }
        push_escaped(&mut id, arg);
    }
    id.push(')');
    id
}

fn push_escaped(out: &mut String, arg: &str) {
    if !arg.chars().any(char::is_control) {
        out.push_str(arg);
        return;
    }
    for c in arg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
}

/// Resolves a dependency written inside `recipe`'s module to a call with literal arguments.
pub(super) fn resolve_dependency<'r>(
    by_namepath: &HashMap<&str, usize>,
    recipe: &Recipe<'_>,
    dependency: &'r DumpDependency<'_>,
) -> Result<Call<'r>, IngestError> {
    let name: &str = &dependency.recipe;
    // A top-level recipe's dependencies are namepaths already; only a module's need joining.
    let target = if recipe.module.is_empty() {
        by_namepath.get(name)
    } else {
        by_namepath.get(join(&recipe.module, name).as_str())
    };
    let Some(&target) = target else {
        return Err(IngestError::UnknownDependency {
            recipe: recipe.namepath.clone(),
            dependency: name.to_string(),
        });
    };
    let Some(args) = dependency.literal_arguments() else {
        return Err(IngestError::NonLiteralArgument {
            recipe: recipe.namepath.clone(),
            dependency: name.to_string(),
        });
    };
    Ok(Call { recipe: target, args })
}

#[cfg(test)]
mod tests {
    use super::call_id;

    #[test]
    fn ids_escape_control_characters_in_arguments_only() {
        assert_eq!(call_id("fmt", &[]), "fmt");
        assert_eq!(call_id("ci::fmt", &["a b", "c/d", "é"]), "ci::fmt(a b,c/d,é)");
        assert_eq!(call_id("say", &["one\ntwo", "\tx\r"]), "say(one\\ntwo,\\tx\\r)");
        assert_eq!(
            call_id("say", &["\u{1b}[31m", "\0", "\u{7f}\u{85}"]),
            "say(\\u{1b}[31m,\\u{0},\\u{7f}\\u{85})"
        );
        assert!(!call_id("say", &["\u{1}\u{9f}\n"]).chars().any(char::is_control));
    }
}
