//! The plan written out: its digest, its pretty JSON for `odu dump` and its Mermaid flowchart.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{Plan, Task};

impl Plan {
    /// `sha256:<hex>` over the compact JSON of the plan: equal plans, equal digests.
    pub fn digest(&self) -> String {
        // The plan is written by hand rather than through `serde_json::to_vec`, which spends more
        // time on its generic machinery than on the bytes; a test pins the two to the same output.
        let mut canonical = String::with_capacity(self.text_len() + 64 * self.tasks.len() + 32);
        self.write_compact(&mut canonical);
        let hash = Sha256::digest(canonical.as_bytes());
        let mut out = String::with_capacity("sha256:".len() + hash.len() * 2);
        out.push_str("sha256:");
        for byte in hash {
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0x0f));
        }
        out
    }

    /// The plan as pretty JSON with its digest and each task's command, newline-terminated.
    pub fn to_json_pretty(&self) -> String {
        // The layout is serde_json's pretty printer's (two-space indent, `[]` for an empty
        // array) with the keys in a fixed order, written by hand because the plan is only
        // strings and arrays of strings; a test pins it to serde_json's own output.
        let digest = self.digest();
        let mut out = String::with_capacity(2 * self.text_len() + 256 * self.tasks.len() + 128);
        out.push_str("{\n  \"root\": ");
        push_json_str(&mut out, &self.root);
        out.push_str(",\n  \"digest\": ");
        push_json_str(&mut out, &digest);
        out.push_str(",\n  \"tasks\": ");
        if self.tasks.is_empty() {
            out.push_str("[]");
        } else {
            out.push('[');
            for (i, task) in self.tasks.iter().enumerate() {
                out.push_str(if i == 0 { "\n    {\n      \"id\": " } else { ",\n    {\n      \"id\": " });
                push_json_str(&mut out, &task.id);
                out.push_str(",\n      \"recipe\": ");
                push_json_str(&mut out, &task.recipe);
                out.push_str(",\n      \"args\": ");
                push_pretty_strings(&mut out, task.args.iter().map(String::as_str));
                // The command is `Task::argv`, whose first two words need no escaping.
                out.push_str(",\n      \"command\": [\n        \"just\",\n        \"--no-deps\",\n        ");
                push_json_str(&mut out, &task.recipe);
                for arg in &task.args {
                    out.push_str(",\n        ");
                    push_json_str(&mut out, arg);
                }
                out.push_str("\n      ]");
                out.push_str(",\n      \"needs\": ");
                push_pretty_strings(&mut out, task.needs.iter().map(String::as_str));
                out.push_str(",\n      \"after\": ");
                push_pretty_strings(&mut out, task.after.iter().map(String::as_str));
                out.push_str(",\n      \"subsequents\": ");
                push_pretty_strings(&mut out, task.subsequents.iter().map(String::as_str));
                out.push_str(",\n      \"os\": ");
                push_pretty_strings(&mut out, task.os.iter().map(String::as_str));
                out.push_str("\n    }");
            }
            out.push_str("\n  ]");
        }
        out.push_str("\n}\n");
        out
    }

    /// The plan as compact JSON, byte for byte what `serde_json::to_vec` makes of it.
    fn write_compact(&self, out: &mut String) {
        out.push_str("{\"root\":");
        push_json_str(out, &self.root);
        out.push_str(",\"tasks\":[");
        for (i, task) in self.tasks.iter().enumerate() {
            out.push_str(if i == 0 { "{\"id\":" } else { ",{\"id\":" });
            push_json_str(out, &task.id);
            out.push_str(",\"recipe\":");
            push_json_str(out, &task.recipe);
            out.push_str(",\"args\":");
            push_compact_strings(out, &task.args);
            out.push_str(",\"needs\":");
            push_compact_strings(out, &task.needs);
            out.push_str(",\"after\":");
            push_compact_strings(out, &task.after);
            out.push_str(",\"subsequents\":");
            push_compact_strings(out, &task.subsequents);
            out.push_str(",\"os\":");
            push_compact_strings(out, &task.os);
            out.push('}');
        }
        out.push_str("]}");
    }

    /// The bytes of every string in the plan, to size output buffers up front.
    fn text_len(&self) -> usize {
        let strings = |items: &[String]| items.iter().map(String::len).sum::<usize>();
        self.root.len()
            + self
                .tasks
                .iter()
                .map(|t| {
                    t.id.len()
                        + t.recipe.len()
                        + strings(&t.args)
                        + strings(&t.needs)
                        + strings(&t.after)
                        + strings(&t.subsequents)
                        + strings(&t.os)
                })
                .sum::<usize>()
    }

    /// A Mermaid flowchart: one node per task, then one edge per need, dependency first; a
    /// subsequent's edge from the recipe that lists it is dotted.
    pub fn mermaid(&self) -> String {
        let names = mermaid_names(&self.tasks);
        let mut out = String::from("flowchart TD\n");
        for task in &self.tasks {
            out.push_str(&format!("    {}[\"{}\"]\n", names[&task.id], mermaid_label(&task.id)));
        }
        for task in &self.tasks {
            for need in &task.needs {
                // A need outside the plan has no node to draw an edge from.
                if let Some(from) = names.get(need) {
                    let arrow = if task.after.contains(need) { "-.->" } else { "-->" };
                    out.push_str(&format!("    {from} {arrow} {}\n", names[&task.id]));
                }
            }
        }
        out
    }
}

/// Appends `s` as a JSON string literal, exactly as serde_json writes it.
fn push_json_str(out: &mut String, s: &str) {
    // serde_json escapes only quotes, backslashes and control characters, so a string without
    // them, which is nearly every id and namepath, is copied as it is; anything else goes through
    // serde_json itself.
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(s).expect("a string always serializes to JSON"));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Appends a compact JSON array of strings.
fn push_compact_strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, item);
    }
    out.push(']');
}

/// Appends a pretty JSON array of strings as a task field: items on their own lines at the
/// fourth indent level, the closing bracket at the third.
fn push_pretty_strings<'s>(out: &mut String, items: impl IntoIterator<Item = &'s str>) {
    let mut items = items.into_iter();
    let Some(first) = items.next() else {
        out.push_str("[]");
        return;
    };
    out.push_str("[\n        ");
    push_json_str(out, first);
    for item in items {
        out.push_str(",\n        ");
        push_json_str(out, item);
    }
    out.push_str("\n      ]");
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

/// Mermaid node names: the id with everything outside `[A-Za-z0-9_]` turned into `_`, suffixed
/// `_2`, `_3`, … in plan order when two ids collapse to the same name.
fn mermaid_names(tasks: &[Task]) -> BTreeMap<String, String> {
    let mut used = BTreeSet::new();
    let mut names = BTreeMap::new();
    for task in tasks {
        let mut base: String =
            task.id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        // Mermaid reads a bare `end` as the end of a subgraph, so it cannot name a node.
        if base == "end" {
            base.push('_');
        }
        let mut name = base.clone();
        let mut n = 2;
        while used.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        used.insert(name.clone());
        names.insert(task.id.clone(), name);
    }
    names
}

/// Escapes a label for a quoted Mermaid node: quotes, entity starts and HTML brackets become
/// entity codes so arguments show up as typed.
fn mermaid_label(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            c => out.push(c),
        }
    }
    out
}
