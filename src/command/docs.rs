//! `odu completions <shell>` and `odu man`: odu's command line described for shells and man,
//! generated from the same definition that parses it.

use std::path::Path;

use crate::cli::{CompletionsArgs, ManArgs};
use crate::error::{CliError, CliResult, out};

pub fn completions(args: CompletionsArgs) -> CliResult<i32> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::cli::command(), "odu", &mut script);
    out(&script)?;
    Ok(0)
}

pub fn man(args: ManArgs) -> CliResult<i32> {
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(crate::cli::command())
                .render(&mut page)
                .map_err(|e| CliError::refused(format!("cannot render the man page: {e}")))?;
            out(&page)?;
        }
        Some(dir) => {
            for page in write_pages(&dir)? {
                crate::error::outln(page.display())?;
            }
        }
    }
    Ok(0)
}

/// Writes odu.1 and one page per command (odu-run.1, ...) into `dir`; the paths written.
fn write_pages(dir: &Path) -> CliResult<Vec<std::path::PathBuf>> {
    let cannot = |e: std::io::Error| {
        CliError::refused(format!(
            "cannot write man pages into {}: {e} (pass --dir an existing directory you can write)",
            dir.display()
        ))
    };
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "--dir {} is not a directory: create it first, or leave --dir out to print the page",
            dir.display()
        )));
    }
    let mut command = crate::cli::command().disable_help_subcommand(true);
    command.build();
    let mut written = vec![clap_mangen::Man::new(command.clone()).generate_to(dir).map_err(cannot)?];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(clap_mangen::Man::new(sub.clone()).generate_to(dir).map_err(cannot)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_is_written_for_odu_and_for_each_command() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_pages(dir.path()).unwrap();
        let names: Vec<String> =
            pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names[0], "odu.1");
        for name in ["odu-run.1", "odu-serve.1", "odu-completions.1", "odu-man.1"] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
        let run = std::fs::read_to_string(dir.path().join("odu-run.1")).unwrap();
        assert!(run.contains("platform"), "{run}");
        let error = write_pages(&dir.path().join("absent")).unwrap_err();
        assert_eq!(error.code, 2);
        assert!(error.message.contains("create it first"), "{}", error.message);
    }
}
