//! Colour for a person at a terminal: the spigot's state and `error:`. None
//! off a terminal or with `NO_COLOR`; `CLICOLOR_FORCE=1` asks for it anyway
//! (a pager that understands it, the tests).

use std::io::IsTerminal;

/// Whether to colour what goes to stdout (`err`: stderr).
pub(crate) fn on(err: bool) -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
    if set("NO_COLOR") {
        return false;
    }
    set("CLICOLOR_FORCE")
        || if err {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        }
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A spigot state: ON green, DRAINING yellow, OFF (and anything else) red.
pub(crate) fn state(text: &str, colour: bool) -> String {
    let code = match text {
        "ON" => "32",
        "DRAINING" => "33",
        _ => "31",
    };
    paint(text, code, colour)
}

/// `error:` in bold red.
pub(crate) fn error(colour: bool) -> String {
    paint("error:", "1;31", colour)
}
