//! Platforms are Nix system tuples (`x86_64-linux`, `aarch64-darwin`); OS attributes of a
//! recipe decide which of them it runs on.

/// The OS part of a system tuple: what follows the last `-`.
pub fn os_of(platform: &str) -> &str {
    platform.rsplit_once('-').map_or(platform, |(_, os)| os)
}

/// Whether a recipe carrying these OS attributes runs on `platform`. No attribute means every
/// platform; several are OR-ed.
pub fn runs_on(os_attributes: &[String], platform: &str) -> bool {
    if os_attributes.is_empty() {
        return true;
    }
    let os = os_of(platform);
    os_attributes.iter().any(|attr| match attr.as_str() {
        "linux" => os == "linux",
        "macos" => os == "darwin",
        "windows" => os == "windows",
        "openbsd" | "freebsd" | "netbsd" | "dragonfly" | "android" => os == attr,
        "unix" => os != "windows",
        _ => false,
    })
}

/// The attributes just knows as OS filters.
pub const OS_ATTRIBUTES: &[&str] =
    &["linux", "macos", "windows", "unix", "openbsd", "freebsd", "netbsd", "dragonfly", "android"];

/// Whether `platform` looks like a Nix system tuple (`<arch>-<os>`).
pub fn is_system_tuple(platform: &str) -> bool {
    match platform.split_once('-') {
        Some((arch, os)) => {
            !arch.is_empty()
                && !os.is_empty()
                && platform.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
        None => false,
    }
}

/// Splits `<name>@<platform>` at the last `@` when a system tuple follows it and something
/// precedes it. A platform never holds an `@`, so no earlier `@` could be followed by one.
pub fn split_platform(token: &str) -> Option<(&str, &str)> {
    let (name, platform) = token.rsplit_once('@')?;
    (!name.is_empty() && is_system_tuple(platform)).then_some((name, platform))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_attributes_select_platforms() {
        let linux = vec!["linux".to_string()];
        assert!(runs_on(&linux, "x86_64-linux"));
        assert!(!runs_on(&linux, "aarch64-darwin"));
        assert!(runs_on(&["macos".into()], "aarch64-darwin"));
        assert!(runs_on(&["unix".into()], "aarch64-darwin"));
        assert!(!runs_on(&["unix".into()], "x86_64-windows"));
        assert!(runs_on(&[], "x86_64-windows"));
        assert!(is_system_tuple("x86_64-linux"));
        assert!(!is_system_tuple("linux"));
    }

    #[test]
    fn a_platform_is_split_off_only_when_a_system_tuple_follows_the_last_at() {
        assert_eq!(split_platform("ci::e2e@x86_64-linux"), Some(("ci::e2e", "x86_64-linux")));
        assert_eq!(
            split_platform("dep(user@host,x)@aarch64-darwin"),
            Some(("dep(user@host,x)", "aarch64-darwin"))
        );
        for token in
            ["dep(user@host,x)", "dep(a@b-c d)", "e2e@", "@x86_64-linux", "e2e", "mail(a@example.com)"]
        {
            assert_eq!(split_platform(token), None, "{token}");
        }
    }
}
