//! A heap budget for chat-template rendering. minijinja bounds a render's steps (fuel) and its
//! repeated strings, and [`super::CappedText`] bounds its output, but nothing bounds the strings
//! a template builds in between: `{% set ns.s = ns.s ~ ns.s %}` in a loop doubles a string each
//! step and asks for tens of GB within 40 steps, far below any fuel limit — the process then
//! aborts inside `malloc` ("memory allocation of … bytes failed").
//!
//! [`BudgetedAllocator`] is the system allocator plus one thread-local read: while
//! [`with_budget`] runs on a thread, it sums what that thread allocates minus what it frees, and
//! when the sum passes the budget it ends the process with one error line naming the template
//! (an allocation cannot return an error, and the template is hostile or broken: there is
//! nothing to recover). The `qtrain` binary installs it as its global allocator; elsewhere
//! (library users, unit tests) the budget is never checked.
//!
//! Must not: allocate while reporting (the line is written piecewise to stderr, the budget
//! cleared first), or keep a budget set after its closure returns.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

/// How much a render may grow the heap: four outputs of the largest size a render may print
/// ([`super::python::MAX_TEMPLATE_TEXT`], 100 MB). Real templates stay below a few MB.
pub const RENDER_HEAP_BUDGET: usize = 400_000_000;

/// The running budget of a thread: bytes grown so far, the limit, and the template's origin
/// (a `&str` that outlives the closure of [`with_budget`]).
#[derive(Clone, Copy)]
struct Budget {
    grown: isize,
    limit: isize,
    origin: (*const u8, usize),
}

thread_local! {
    // `const` and `Copy`: reading it never allocates or registers a destructor, so the
    // allocator may use it.
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Run `f` with this thread's heap growth limited to `limit` bytes (see the module doc).
/// Budgets do not nest: an inner call replaces the outer one until it returns.
pub(crate) fn with_budget<T>(origin: &str, limit: usize, f: impl FnOnce() -> T) -> T {
    let budget = Budget { grown: 0, limit: limit.min(isize::MAX as usize) as isize, origin: (origin.as_ptr(), origin.len()) };
    let outer = BUDGET.with(|b| b.replace(Some(budget)));
    // Restores the outer budget even if `f` unwinds.
    struct Restore(Option<Budget>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = BUDGET.try_with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(outer);
    f()
}

/// The system allocator, charging each thread's budget while one is set.
pub struct BudgetedAllocator;

// SAFETY: every call is forwarded unchanged to `System`; the budget bookkeeping touches only a
// thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for BudgetedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(-(layout.size() as isize));
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Adds `bytes` to this thread's budget, if one is set; past its limit, reports and exits.
fn charge(bytes: isize) {
    // `try_with`: the thread-local is gone while a thread is torn down.
    let over = BUDGET
        .try_with(|b| {
            let mut budget = b.get()?;
            budget.grown = budget.grown.saturating_add(bytes);
            b.set(Some(budget));
            (bytes > 0 && budget.grown > budget.limit).then(|| {
                b.set(None);
                budget
            })
        })
        .ok()
        .flatten();
    if let Some(budget) = over {
        over_budget(&budget);
    }
}

/// The one error line, then exit status 1 (what `main` returns for any error).
#[cold]
fn over_budget(budget: &Budget) -> ! {
    // SAFETY: `origin` is the `&str` given to `with_budget`, which is still running.
    let origin = unsafe { std::slice::from_raw_parts(budget.origin.0, budget.origin.1) };
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"error: chat template ");
    let _ = err.write_all(origin);
    let _ = err.write_all(b": render failed: the template needs more than ");
    let mut digits = [0u8; 20];
    let _ = err.write_all(decimal(budget.limit as u64 / 1_000_000, &mut digits));
    let _ = err.write_all(b" MB of memory (a string that grows without end?)\n");
    std::process::exit(1)
}

/// `n` in decimal, written into `buf` without allocating.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_set_only_inside_the_closure_and_restored_after() {
        assert!(BUDGET.with(|b| b.get()).is_none());
        let limit = with_budget("t.jinja", 1234, || BUDGET.with(|b| b.get()).map(|b| b.limit));
        assert_eq!(limit, Some(1234));
        assert!(BUDGET.with(|b| b.get()).is_none());
        // Without the allocator installed (this test binary) nothing is charged or refused.
        let grown = with_budget("t.jinja", 10, || {
            let v = vec![0u8; 1000];
            (v.len(), BUDGET.with(|b| b.get()).map(|b| b.grown))
        });
        assert_eq!(grown, (1000, Some(0)));
    }

    #[test]
    fn decimal_prints_without_allocating() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(400, &mut buf), b"400");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
