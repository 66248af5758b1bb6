//! Process-wide memory settings, applied once at start-up by the gateway binary.
//!
//! The gateway serves answers of up to a megabyte to many clients at once, and under the Q1 load
//! most of its resident memory was not live data but memory the allocator (mimalloc) kept:
//!
//! - mimalloc asks for transparent huge pages on its arenas (`MADV_HUGEPAGE`), so a 2 MiB page
//!   becomes resident as soon as one allocation touches it: AnonHugePages was 36 of 59 MiB after
//!   a few sequential Q1 requests, and idle RSS 22 MiB instead of 13 MiB. THP bought no
//!   measurable speed, so the process opts out (`PR_SET_THP_DISABLE`; children such as the
//!   embedded PostgreSQL inherit it, in line with PostgreSQL's own advice on THP).
//! - mimalloc 3 returns freed pages to the OS only after a second (`purge_delay`), long enough
//!   for every executing request's buffers to pile up. [`PURGE_DELAY_MS`] shortens that.
//!
//! `MIMALLOC_PURGE_DELAY` in the environment still wins over the built-in value.

use std::os::raw::{c_int, c_long};

// The functions below come from this crate's C library; naming it keeps it linked into every
// binary that uses this module, test binaries included.
use mimalloc as _;

/// Milliseconds before mimalloc returns freed memory. Measured under Q1 (one run each):
/// 1000 ms (mimalloc's default) peaked at 72 MiB, 0 at 47 MiB but cost a tenth of the
/// throughput in `madvise` calls; see the README's load benchmark for the value chosen.
pub const PURGE_DELAY_MS: c_long = 100;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same position in mimalloc 2 and 3;
/// option numbers are part of its ABI). The test below checks it against the default.
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    // Provided by the mimalloc library the global allocator links (libmimalloc-sys).
    fn mi_option_set(option: c_int, value: c_long);
}

/// Applies the settings above; call before the runtime starts.
pub fn tune() {
    // SAFETY: prctl with these arguments only sets a flag of this process; failure (an old or
    // restricted kernel) leaves the default, which is harmless.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting a documented mimalloc option; mimalloc reads it on each purge.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
    }

    fn purge_delay_ms() -> c_long {
        // SAFETY: reading a mimalloc option.
        unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn the_option_number_is_mimallocs_purge_delay() {
        // The test binary uses the system allocator, but links the same mimalloc library, whose
        // default purge delay is 1000 ms (mimalloc 3) or 10 ms (mimalloc 2); no other option
        // defaults to either value.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            let d = purge_delay_ms();
            assert!(d == 1000 || d == 10, "option 15 is {d}");
        }
        tune();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
        }
    }
}
