//! Close matches for "did you mean": a name the user mistyped against the names there are.

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn counts_the_edits_between_two_names() {
        assert_eq!(edit_distance("identiy", "identity"), 1);
        assert_eq!(edit_distance("e2e", "e2e"), 0);
        assert_eq!(edit_distance("", "jobs"), 4);
        assert_eq!(edit_distance("host", "port"), 2);
    }
}
