//! A boundary around third-party parsers that panic on some malformed input instead of
//! returning an error (`tokenizers` 0.22 `expect`s inside its `decoder` deserializer).
//!
//! [`catch_panic`] turns such a panic into `Err(message)` without the default hook's
//! "thread panicked at" text reaching stderr, so the caller can report one clean error
//! naming the file. It must not be used around qtrain's own code: our own panics are bugs
//! and must stay loud.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs inside [`catch_panic`]: its panics are reported as errors.
    static CAUGHT_HERE: Cell<bool> = const { Cell::new(false) };
}

static INSTALL_QUIET_HOOK: Once = Once::new();

/// Wrap the current panic hook once so it stays silent for panics [`catch_panic`] catches
/// (every other panic still goes to the previous hook).
fn install_quiet_hook() {
    INSTALL_QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CAUGHT_HERE.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Run `parse`; a panic inside it becomes `Err` with the panic's message.
pub(crate) fn catch_panic<T>(parse: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    let was_caught = CAUGHT_HERE.with(|c| c.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(parse));
    CAUGHT_HERE.with(|c| c.set(was_caught));
    outcome.map_err(|payload| {
        let text = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
        text.unwrap_or_else(|| "the parser gave up without a message".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_values_pass_through() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        assert_eq!(catch_panic(|| -> u8 { panic!("Helper") }), Err("Helper".to_string()));
        let n = 3;
        assert_eq!(catch_panic(|| -> u8 { panic!("bad {n}") }), Err("bad 3".to_string()));
        assert!(!CAUGHT_HERE.with(Cell::get));
    }
}
