//! Text from a file, shown safely on a terminal.
//!
//! A model file's metadata, a checksum manifest's file names or a path can
//! hold control characters: escape sequences that recolour or rewrite the
//! terminal, carriage returns that hide what came before, bidirectional
//! overrides that reorder what follows. [`Printable`] shows such text with
//! every one of them escaped, so what is printed is what the bytes say.
#![forbid(unsafe_code)]

use core::fmt;

/// Displays `text` with control characters (C0, DEL, C1) and bidirectional
/// formatting characters escaped Rust-style: `\n`, `\r`, `\t`, `\u{1b}`,
/// `\u{202e}`. Everything else is shown as it is, backslashes too (so
/// messages that already quote text Rust-style stay readable).
#[derive(Clone, Copy, Debug)]
pub struct Printable<'a>(pub &'a str);

/// Whether `c` changes how the text around it is laid out or shown.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or('\0');
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn escapes_what_moves_the_terminal_and_nothing_else() {
        let shown = |s: &str| format!("{}", Printable(s));
        assert_eq!(shown("plain text, café 日本"), "plain text, café 日本");
        assert_eq!(shown("\u{1b}[31mred\u{1b}[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(shown("a\nb\rc\td\\e"), "a\\nb\\rc\\td\\e");
        assert_eq!(shown("\0\u{7f}\u{9b}"), "\\u{0}\\u{7f}\\u{9b}");
        assert_eq!(shown("x\u{202e}gnp.exe"), "x\\u{202e}gnp.exe");
        assert_eq!(shown(""), "");
    }
}
