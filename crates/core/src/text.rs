//! Text from outside (a branch name, a commit message, a target's answer, a
//! step's output) shown on an operator's terminal.

/// `text` with control characters (terminal escapes among them) replaced by
/// a space, so that untrusted text cannot move the cursor, recolour or
/// rewrite what the operator reads.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_are_neutralised_and_text_kept() {
        assert_eq!(
            printable("ok\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "ok [2J ]0;pwned "
        );
        assert_eq!(printable("feature/über-ß 1.2"), "feature/über-ß 1.2");
    }
}
