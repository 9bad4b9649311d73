//! Why a dump does not make a plan, or a selector names no task of it.

/// Why a dump does not make a plan, or a selector names no task of it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("just's JSON dump could not be read: {0}")]
    BadDump(String),
    #[error("{}", root_count_message(.found))]
    RootCount { found: Vec<String> },
    #[error("no recipe named \"{root}\" in the justfile{}", root_candidates_message(.candidates))]
    UnknownRoot { root: String, candidates: Vec<String> },
    #[error(
        "recipe \"{recipe}\" depends on \"{dependency}\", which names no recipe in its module or a \
         child module: fix the dependency's path in the justfile"
    )]
    UnknownDependency { recipe: String, dependency: String },
    #[error(
        "recipe \"{recipe}\" passes a non-literal argument to \"{dependency}\": odu runs \
         dependencies with literal string arguments only; pass literals or move the expression \
         into the recipe body"
    )]
    NonLiteralArgument { recipe: String, dependency: String },
    #[error(
        "two different dependencies both become the task \"{id}\": keep commas and parentheses out \
         of literal dependency arguments"
    )]
    DuplicateTask { id: String },
    #[error(
        "root recipe \"{recipe}\" needs an argument for its parameter \"{parameter}\" and odu \
         runs the root without arguments: give \"{parameter}\" a default, or make the root a \
         recipe that depends on ({recipe} \"value\")"
    )]
    RequiredParameter { recipe: String, parameter: String },
    #[error("recipe \"{0}\" has the name odu gives each lane's setup node: rename the recipe")]
    ReservedName(&'static str),
    #[error("task \"{task}\" needs \"{need}\", which is not in the plan: add it or drop the need")]
    UnknownNeed { task: String, need: String },
    #[error("the dependencies form a cycle through \"{node}\": break the cycle in the justfile")]
    Cycle { node: String },
    #[error("selector \"{selector}\" is ambiguous: {} — use the full namepath", .candidates.join(", "))]
    AmbiguousSelector { selector: String, candidates: Vec<String> },
    #[error(
        "selector \"{selector}\": \"{alias}\" is an alias of \"{target}\", which the pipeline does not \
         run: pass --root {target} to run it"
    )]
    AliasOutsidePipeline { selector: String, alias: String, target: String },
    #[error(
        "root recipe \"{root}\" runs on no lane: {why}, and the lanes are {}: add a host for a \
         platform it runs on (--host PLATFORM=ADDR), or change its OS attributes", .platforms.join(", ")
    )]
    RootRunsNowhere { root: String, why: String, platforms: Vec<String> },
    #[error(
        "root recipe \"{root}\" is marked [metadata(\"ci\")] but is only {}, so just on this {here} \
         machine leaves it out of its dump and no lane can run it (lanes: {}): run odu where just \
         keeps it, or change its OS attributes", super::select::attributes(.os), .platforms.join(", ")
    )]
    RootLeftOut { root: String, os: Vec<String>, here: String, platforms: Vec<String> },
    #[error("selector \"{selector}\" matches no pipeline recipe ({})", selector_candidates_message(.candidates))]
    UnknownSelector { selector: String, candidates: Vec<String> },
}

/// How many namepaths an unknown `--root` lists at most.
pub(super) const MAX_ROOT_CANDIDATES: usize = 10;
/// How many task ids an unmatched selector lists before it elides the rest.
const MAX_SELECTOR_CANDIDATES: usize = 20;

fn root_count_message(found: &[String]) -> String {
    if found.is_empty() {
        "expected exactly one [metadata(\"ci\")] recipe, found 0: mark the pipeline's root recipe \
         with [metadata(\"ci\")] or pass --root NAMEPATH"
            .to_string()
    } else {
        format!(
            "expected exactly one [metadata(\"ci\")] recipe, found {} ({}): keep the attribute on \
             one of them or pass --root NAMEPATH",
            found.len(),
            found.join(", ")
        )
    }
}

fn root_candidates_message(candidates: &[String]) -> String {
    if candidates.is_empty() {
        ", which has no recipes: add the pipeline's recipes to the justfile".to_string()
    } else {
        format!(": pass --root with a recipe's namepath, such as {}", candidates.join(", "))
    }
}

fn selector_candidates_message(candidates: &[String]) -> String {
    if candidates.is_empty() {
        return "the plan has no tasks".to_string();
    }
    let mut listed = candidates.iter().take(MAX_SELECTOR_CANDIDATES).cloned().collect::<Vec<_>>();
    if candidates.len() > MAX_SELECTOR_CANDIDATES {
        listed.push("…".to_string());
    }
    format!("recipes: {}", listed.join(", "))
}
