//! The recipes of a dump, flattened out of their modules, and the root among them.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::IngestError;
use super::dump::{DumpDependency, DumpModule};
use super::error::MAX_ROOT_CANDIDATES;

/// One recipe of the justfile, flattened out of its module.
#[derive(Debug)]
pub(super) struct Recipe<'a> {
    pub(super) namepath: String,
    /// The declaring module's namepath (`ci::sub`), empty at the top level; dependencies are
    /// written relative to it.
    pub(super) module: Rc<str>,
    pub(super) has_body: bool,
    /// OS attributes, sorted.
    pub(super) os: Vec<&'static str>,
    ci: bool,
    /// Marked `[confirm]`: just asks before running it, unless given `--yes`.
    pub(super) confirm: bool,
    /// The first parameter that needs an argument, as written (`env`, `+targets`, `--env`).
    pub(super) required_parameter: Option<String>,
    pub(super) dependencies: Vec<DumpDependency<'a>>,
    /// How many of `dependencies` run before the recipe; the rest are `&&` subsequents.
    pub(super) priors: usize,
    /// The recipe's place in the dump, module by module, to report namepath clashes in order.
    position: usize,
}

/// Every recipe of the dump, sorted by namepath so that a namepath is found by binary search
/// and recipe indices order recipes as their namepaths do; and every alias, by its namepath
/// (`ci::t`), to its target's (`ci::test`).
pub(super) fn flatten_all(dump: DumpModule<'_>) -> Result<(Vec<Recipe<'_>>, Aliases), IngestError> {
    let mut recipes = Vec::new();
    let mut aliases = BTreeMap::new();
    flatten(dump, &Rc::from(""), &mut recipes, &mut aliases);
    recipes.sort_by(|a, b| a.namepath.cmp(&b.namepath));
    // The stable sort leaves recipes that share a namepath adjacent and in dump order. The clash
    // reported is the one whose second recipe comes first in the dump, where adding the recipes
    // one by one would have stopped.
    let clash = recipes
        .windows(2)
        .filter(|pair| pair[0].namepath == pair[1].namepath)
        .map(|pair| &pair[1])
        .min_by_key(|recipe| recipe.position);
    if let Some(recipe) = clash {
        return Err(IngestError::BadDump(format!(
            "two recipes share the namepath \"{}\": pass an unedited dump",
            recipe.namepath
        )));
    }
    // just dumps an alias's target without its module path, so a target is found in the alias's
    // own module; an alias whose target is not there is dropped rather than guessed at.
    aliases.retain(|_, target| lookup(&recipes, target).is_some());
    Ok((recipes, aliases))
}

/// Alias namepath → target namepath.
pub(super) type Aliases = BTreeMap<String, String>;

fn flatten<'a>(module: DumpModule<'a>, path: &Rc<str>, out: &mut Vec<Recipe<'a>>, aliases: &mut Aliases) {
    for (name, alias) in module.aliases {
        aliases.insert(join(path, &name), join(path, &alias.target));
    }
    for (name, recipe) in module.recipes {
        let namepath = match &recipe.namepath {
            Some(namepath) if !namepath.is_empty() => namepath.to_string(),
            _ => join(path, &name),
        };
        let priors = recipe.priors.unwrap_or(recipe.dependencies.len()).min(recipe.dependencies.len());
        out.push(Recipe {
            namepath,
            module: Rc::clone(path),
            has_body: recipe.has_body(),
            os: recipe.os(),
            ci: recipe.is_ci(),
            confirm: recipe.confirms(),
            required_parameter: recipe.required_parameter(),
            dependencies: recipe.dependencies,
            priors,
            position: out.len(),
        });
    }
    for (name, child) in module.modules {
        flatten(child, &Rc::from(join(path, &name)), out, aliases);
    }
}

pub(super) fn join(module: &str, name: &str) -> String {
    if module.is_empty() { name.to_string() } else { format!("{module}::{name}") }
}

/// The index of the recipe with this namepath.
fn lookup(recipes: &[Recipe<'_>], namepath: &str) -> Option<usize> {
    recipes.binary_search_by(|recipe| recipe.namepath.as_str().cmp(namepath)).ok()
}

/// The root: `--root`'s recipe, a recipe's namepath or an alias of one, else the one
/// `[metadata("ci")]` recipe.
pub(super) fn find_root(
    recipes: &[Recipe<'_>],
    aliases: &Aliases,
    root: Option<&str>,
) -> Result<usize, IngestError> {
    if let Some(root) = root {
        let target = aliases.get(root).map_or(root, String::as_str);
        return lookup(recipes, target).ok_or_else(|| IngestError::UnknownRoot {
            root: root.to_string(),
            candidates: close_names(root, recipes.iter().map(|r| r.namepath.as_str()), aliases),
        });
    }
    let found: Vec<usize> = (0..recipes.len()).filter(|&i| recipes[i].ci).collect();
    match found.as_slice() {
        [root] => Ok(*root),
        _ => Err(IngestError::RootCount {
            found: found.iter().map(|&i| recipes[i].namepath.clone()).collect(),
        }),
    }
}

/// Namepaths and aliases that look like `wanted`, closest first, an alias written with its target
/// (`t (alias of test)`); when nothing looks alike, the first namepaths alphabetically.
pub(super) fn close_names<'a>(
    wanted: &str,
    namepaths: impl Iterator<Item = &'a str> + Clone,
    aliases: &'a Aliases,
) -> Vec<String> {
    let close = close_namepaths(wanted, namepaths.chain(aliases.keys().map(String::as_str)));
    close
        .into_iter()
        .map(|name| match aliases.get(&name) {
            Some(target) => format!("{name} (alias of {target})"),
            None => name,
        })
        .collect()
}

/// Namepaths that look like `wanted` (same leaf, containing it, or a few edits away), closest
/// first; when nothing looks alike, the first namepaths alphabetically.
fn close_namepaths<'a>(wanted: &str, all: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    let leaf = leaf_of(wanted);
    let tolerance = (wanted.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, &str)> = all
        .clone()
        .filter_map(|name| {
            if leaf_of(name) == leaf {
                Some((0, name))
            } else if name.contains(wanted) {
                Some((1, name))
            } else {
                let distance = crate::suggest::edit_distance(wanted, name)
                    .min(crate::suggest::edit_distance(leaf, leaf_of(name)));
                (distance <= tolerance).then_some((1 + distance, name))
            }
        })
        .collect();
    scored.sort();
    if scored.is_empty() {
        return all.take(MAX_ROOT_CANDIDATES).map(str::to_string).collect();
    }
    scored.into_iter().take(MAX_ROOT_CANDIDATES).map(|(_, name)| name.to_string()).collect()
}

pub(super) fn leaf_of(namepath: &str) -> &str {
    namepath.rsplit("::").next().unwrap_or(namepath)
}
