//! The dump, `just --dump --dump-format json`, read with serde. Reading is lenient: a missing or
//! null field reads as empty and unknown fields are ignored, so newer just versions that add
//! fields keep working. Only what the plan needs is kept; recipe bodies are checked and dropped
//! without being built.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::IngestError;
use crate::platform::OS_ATTRIBUTES;

/// One module of the dump: the top level, or one of its `mod`s.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DumpModule<'a> {
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub(super) recipes: BTreeMap<Name<'a>, DumpRecipe<'a>>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub(super) modules: BTreeMap<Name<'a>, DumpModule<'a>>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub(super) aliases: BTreeMap<Name<'a>, DumpAlias<'a>>,
}

/// `alias t := test`: just dumps the target's bare name, without a module path, so a target is
/// read relative to the alias's module.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DumpAlias<'a> {
    #[serde(borrow)]
    pub(super) target: Name<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DumpRecipe<'a> {
    #[serde(borrow)]
    pub(super) namepath: Option<Name<'a>>,
    #[serde(deserialize_with = "null_as_default")]
    attributes: Vec<Value>,
    body: Body,
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub(super) dependencies: Vec<DumpDependency<'a>>,
    pub(super) priors: Option<usize>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    parameters: Vec<DumpParameter<'a>>,
}

/// A recipe parameter: `name`, `name="default"`, `+name`, `*name`, or an option (`long`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DumpParameter<'a> {
    #[serde(borrow)]
    name: Name<'a>,
    default: Value,
    /// `singular`, `plus` (`+`, at least one value) or `star` (`*`, any number).
    kind: Value,
    flag: Value,
    long: Value,
    short: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DumpDependency<'a> {
    #[serde(borrow)]
    pub(super) recipe: Name<'a>,
    #[serde(deserialize_with = "null_as_default")]
    arguments: Vec<Value>,
    star: Value,
}

/// Reads a dump.
pub(super) fn read(json: &str) -> Result<DumpModule<'_>, IngestError> {
    serde_json::from_str(json).map_err(|e| {
        IngestError::BadDump(format!(
            "{e}: pass the output of `just --dump --dump-format json` from just 1.57 or newer"
        ))
    })
}

/// The recipes of `just --dump` (the justfile as text, one attribute a line) marked
/// `[metadata("ci")]` with OS attributes, with those attributes sorted: just leaves a recipe whose
/// OS attributes rule out the machine out of its JSON dump, but not out of its text.
pub fn os_gated_roots(text: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let (mut ci, mut os) = (false, BTreeSet::new());
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) || line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(attribute) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let attribute = attribute.trim();
            if let Some(values) = attribute.strip_prefix("metadata(").and_then(|a| a.strip_suffix(')')) {
                ci |= values.split(',').any(|value| value.trim() == "\"ci\"" || value.trim() == "'ci'");
            } else if let Some(name) = OS_ATTRIBUTES.iter().find(|name| **name == attribute) {
                os.insert(name.to_string());
            }
            continue;
        }
        let header = line.trim_start_matches('@');
        let name: String =
            header.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-').collect();
        let rest = header[name.len()..].trim_start();
        let is_recipe = !name.is_empty()
            && !rest.starts_with(":=")
            && (rest.starts_with(':')
                || rest.starts_with(|c: char| c.is_alphanumeric() || "+*$".contains(c)));
        if is_recipe && ci && !os.is_empty() {
            found.push((name, std::mem::take(&mut os).into_iter().collect()));
        }
        (ci, os) = (false, BTreeSet::new());
    }
    found
}

/// A field that is `null` in a dump reads as its default, as one left out does (for
/// `#[serde(deserialize_with)]`).
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl DumpRecipe<'_> {
    /// Whether the recipe has a body of its own, rather than standing for its dependencies.
    pub(super) fn has_body(&self) -> bool {
        self.body.0
    }

    /// The recipe's OS attributes (`linux`, `unix`, …), sorted and deduplicated.
    pub(super) fn os(&self) -> Vec<&'static str> {
        let os: BTreeSet<&'static str> = self
            .attributes
            .iter()
            .filter_map(|attribute| OS_ATTRIBUTES.iter().copied().find(|os| attribute.as_str() == Some(*os)))
            .collect();
        os.into_iter().collect()
    }

    /// The first parameter a call without arguments leaves without a value, as written.
    pub(super) fn required_parameter(&self) -> Option<String> {
        self.parameters.iter().find(|parameter| parameter.required()).map(DumpParameter::written)
    }

    /// Whether the recipe is marked `[confirm]` or `[confirm("prompt")]`: just asks before it
    /// runs it, unless given `--yes`.
    pub(super) fn confirms(&self) -> bool {
        self.attributes.iter().any(|attribute| match attribute {
            Value::String(name) => name == "confirm",
            Value::Object(fields) => fields.contains_key("confirm"),
            _ => false,
        })
    }

    /// Whether the recipe is marked `[metadata("ci")]`: an attribute `{"metadata": "ci"}` or
    /// `{"metadata": [.., "ci", ..]}`.
    pub(super) fn is_ci(&self) -> bool {
        self.attributes.iter().any(|attribute| match attribute.get("metadata") {
            Some(Value::String(value)) => value == "ci",
            Some(Value::Array(values)) => values.iter().any(|value| value == "ci"),
            _ => false,
        })
    }
}

impl DumpParameter<'_> {
    /// Whether calling the recipe with no arguments leaves this parameter without a value:
    /// no default, not a flag, and not `*` variadic.
    fn required(&self) -> bool {
        self.default.is_null() && self.flag != Value::Bool(true) && self.kind.as_str() != Some("star")
    }

    /// The parameter as the justfile and just's own messages write it: `env`, `+targets`,
    /// `--env` for an option.
    fn written(&self) -> String {
        if let Some(long) = self.long.as_str() {
            format!("--{long}")
        } else if let Some(short) = self.short.as_str() {
            format!("-{short}")
        } else if self.kind.as_str() == Some("plus") {
            format!("+{}", &*self.name)
        } else {
            self.name.to_string()
        }
    }
}

impl DumpDependency<'_> {
    /// The arguments when every one is a literal string and none is splatted; `None` when one
    /// is computed at run time.
    pub(super) fn literal_arguments(&self) -> Option<Vec<&str>> {
        if !matches!(self.star, Value::Null | Value::Bool(false)) {
            return None;
        }
        self.arguments.iter().map(Value::as_str).collect()
    }
}

/// Whether a recipe has a body: a non-empty array of lines, or anything but null and an array.
/// The lines are read as `IgnoredAny`: checked, never built.
#[derive(Debug, Default)]
struct Body(bool);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = Body;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_unit<E>(self) -> Result<Body, E> {
                Ok(Body(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut lines: A) -> Result<Body, A::Error> {
                let mut any = false;
                while lines.next_element::<IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(Body(any))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Body, A::Error> {
                while entries.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Body(true))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Body, E> {
                Ok(Body(true))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Body, E> {
                Ok(Body(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Body, E> {
                Ok(Body(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Body, E> {
                Ok(Body(true))
            }
            fn visit_str<E>(self, _: &str) -> Result<Body, E> {
                Ok(Body(true))
            }
        }
        deserializer.deserialize_any(BodyVisitor)
    }
}

/// A name or namepath, borrowed from the dump unless decoding its escapes needed a copy: a
/// dump names every recipe several times over.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Name<'a>(Cow<'a, str>);

impl Deref for Name<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor<'a>(PhantomData<&'a str>);
        impl<'de: 'a, 'a> Visitor<'de> for NameVisitor<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(NameVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(json: &str) -> DumpRecipe<'_> {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    #[test]
    fn missing_null_and_unknown_fields_read_as_empty() {
        for json in
            ["{}", r#"{"recipes": null, "modules": null, "aliases": {}, "settings": {"shell": null}}"#]
        {
            let module = read(json).unwrap();
            assert!(module.recipes.is_empty() && module.modules.is_empty(), "{json}");
        }
        let bare = recipe(
            r#"{"namepath": null, "attributes": null, "dependencies": null, "priors": null, "x": [1.5, {"y": true}]}"#,
        );
        assert!(bare.namepath.is_none() && bare.dependencies.is_empty() && bare.priors.is_none());
        assert!(!bare.has_body() && bare.os().is_empty() && !bare.is_ci());
    }

    #[test]
    fn a_body_is_a_non_empty_list_of_lines_or_anything_but_null() {
        for (body, has) in [
            ("null", false),
            ("[]", false),
            ("[[]]", true),
            (r#"[["echo ", ["variable", "x"]]]"#, true),
            (r#""x""#, true),
            ("{}", true),
            ("7", true),
        ] {
            assert_eq!(recipe(&format!(r#"{{"body": {body}}}"#)).has_body(), has, "{body}");
        }
    }

    #[test]
    fn attributes_give_os_names_and_the_ci_mark() {
        let tagged = recipe(
            r#"{"attributes": ["unix", "linux", "unix", "parallel", 7, null, ["ci"], {"confirm": "?"},
                {"metadata": "x"}, {"metadata": [["ci"], "ci"]}]}"#,
        );
        assert_eq!(tagged.os(), ["linux", "unix"]);
        assert!(tagged.is_ci());
        assert!(recipe(r#"{"attributes": [{"metadata": "ci"}]}"#).is_ci());
        assert!(!recipe(r#"{"attributes": ["ci", {"metadata": ["cix"]}, {"group": "ci"}]}"#).is_ci());
    }

    #[test]
    fn the_text_dump_shows_roots_the_json_dump_leaves_out() {
        // As just 1.59 prints `--dump` on Linux.
        let text = "alias b := build\nstamp := `date`\n\n[metadata(\"ci\")]\n[windows]\nci: build\n\n\
                    build:\n    echo build\n\n[metadata(\"x\", \"ci\")]\n[macos]\n[unix]\n@other a=\"1\":\n    echo o\n\n\
                    [metadata(\"ci\")]\nplain:\n    echo p\n\n[linux]\nlin:\n    echo l\n";
        assert_eq!(
            os_gated_roots(text),
            [
                ("ci".to_string(), vec!["windows".to_string()]),
                ("other".into(), vec!["macos".into(), "unix".into()])
            ]
        );
        assert!(os_gated_roots("").is_empty());
    }

    #[test]
    fn confirm_with_or_without_a_prompt_asks() {
        // As just 1.59 dumps `[confirm]` and `[confirm("sure?")]`.
        assert!(recipe(r#"{"attributes": [{"confirm": null}]}"#).confirms());
        assert!(recipe(r#"{"attributes": ["linux", {"confirm": "sure?"}]}"#).confirms());
        assert!(recipe(r#"{"attributes": ["confirm"]}"#).confirms());
        assert!(!recipe(r#"{"attributes": [{"metadata": ["confirm"]}, "linux"]}"#).confirms());
    }

    #[test]
    fn aliases_are_read_per_module() {
        let module = read(
            r#"{"aliases": {"t": {"attributes": [], "name": "t", "target": "test"}},
                "modules": {"m": {"aliases": {"b": {"target": "build"}}}}}"#,
        )
        .unwrap();
        assert_eq!(&*module.aliases[&Name(Cow::Borrowed("t"))].target, "test");
        assert_eq!(
            &*module.modules[&Name(Cow::Borrowed("m"))].aliases[&Name(Cow::Borrowed("b"))].target,
            "build"
        );
        assert!(read(r#"{"aliases": null}"#).unwrap().aliases.is_empty());
    }

    #[test]
    fn a_parameter_is_required_without_a_default_a_flag_or_a_star() {
        // As just 1.59 dumps them, fields it leaves null included.
        let parameter = |fields: &str| {
            format!(
                r#"{{"parameters": [{{"name": "x", "default": "d", "kind": "singular"}},
                    {{"default": null, "export": false, "help": null, "value": null, "pattern": null,
                      "min": null, "max": null, "multiple": false, "name": "a", {fields}}}]}}"#
            )
        };
        for (fields, required) in [
            (r#""kind": "singular", "flag": false, "long": null, "short": null"#, Some("a")),
            (r#""kind": "plus", "flag": false, "long": null, "short": null"#, Some("+a")),
            (r#""kind": "star", "flag": false, "long": null, "short": null"#, None),
            (r#""kind": "singular", "flag": false, "long": "aa", "short": null"#, Some("--aa")),
            (r#""kind": "singular", "flag": false, "long": null, "short": "s""#, Some("-s")),
            (r#""kind": "singular", "flag": true, "long": "aa", "short": null"#, None),
            (r#""kind": "singular""#, Some("a")),
        ] {
            let json = parameter(fields);
            assert_eq!(recipe(&json).required_parameter().as_deref(), required, "{fields}");
            let with_default = json.replace(r#""default": null"#, r#""default": "x""#);
            assert_eq!(recipe(&with_default).required_parameter(), None, "{fields}");
        }
        assert_eq!(recipe(r#"{"parameters": null}"#).required_parameter(), None);
        // A default that is an expression is a default too.
        let computed = r#"{"parameters": [{"name": "a", "kind": "singular", "default": ["call", "x"]}]}"#;
        assert_eq!(recipe(computed).required_parameter(), None);
    }

    #[test]
    fn only_literal_unsplatted_arguments_are_literal() {
        let dependency = |json: &str| -> Option<Vec<String>> {
            let dependency: DumpDependency = serde_json::from_str(json).unwrap();
            dependency.literal_arguments().map(|args| args.into_iter().map(str::to_string).collect())
        };
        assert_eq!(dependency(r#"{"recipe": "b"}"#), Some(vec![]));
        assert_eq!(
            dependency(r#"{"arguments": ["x", "q\"y"], "star": false}"#),
            Some(vec!["x".into(), "q\"y".into()])
        );
        assert_eq!(dependency(r#"{"arguments": ["x", ["variable", "v"]]}"#), None);
        assert_eq!(dependency(r#"{"arguments": [], "star": "*"}"#), None);
        assert_eq!(dependency(r#"{"star": true}"#), None);
    }

    #[test]
    fn names_are_borrowed_unless_escaped() {
        let module =
            read(r#"{"recipes": {"a": {"namepath": "a"}, "b\u0062": {"namepath": "m::\u0062"}}}"#).unwrap();
        let (plain, escaped) =
            (&module.recipes[&Name(Cow::Borrowed("a"))], &module.recipes[&Name(Cow::Borrowed("bb"))]);
        assert!(matches!(plain.namepath, Some(Name(Cow::Borrowed("a")))));
        assert!(matches!(&escaped.namepath, Some(Name(Cow::Owned(name))) if name == "m::b"));
    }

    #[test]
    fn malformed_dumps_and_wrong_types_are_bad_dumps() {
        for json in [
            "",
            "{",
            r#"{"recipes": []}"#,
            r#"{"recipes": {"a": null}}"#,
            r#"{"recipes": {}, "recipes": {}}"#,
            r#"{"recipes": {"a": {"priors": -1}}}"#,
            r#"{"recipes": {"a": {"dependencies": [{"recipe": null}]}}}"#,
        ] {
            let err = read(json).unwrap_err();
            assert!(matches!(err, IngestError::BadDump(_)), "{json}: {err:?}");
        }
    }
}
