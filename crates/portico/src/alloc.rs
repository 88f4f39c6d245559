//! The global allocator (mimalloc) and the one thing Portico asks of it beyond malloc and free:
//! giving idle memory back to the operating system.
//!
//! mimalloc returns a thread's freed pages to the OS only from that thread's own slow-path
//! allocations. A worker that served a burst (200 slow readers holding 64 KiB each, measured:
//! +29 MB) and then goes quiet would keep that memory for as long as it stays quiet. Each worker
//! therefore calls [`collect`] about once a second (`portico_proxy::downstream::server::set_idle_collect`):
//! measured cost a few microseconds on an idle heap, and RSS back within 20 MB of the start a few
//! seconds after the readers left (crates/portico/tests/e2e/slow_readers.rs).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Frees what the calling thread's heap no longer uses and returns it to the OS.
#[allow(unsafe_code)]
pub fn collect() {
    // SAFETY: `mi_collect` takes no pointers and only walks the calling thread's own heap; it is
    // safe to call at any time from any thread that uses mimalloc (every thread here does).
    unsafe { libmimalloc_sys::mi_collect(false) }
}

#[cfg(test)]
mod tests {
    /// mimalloc's `arena_eager_commit` option (its index in `mi_option_t`).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

    /// The build sets mimalloc's compile-time default to commit arena memory on demand
    /// (`.cargo/config.toml`): with mimalloc's own default (2: eager on Linux) idle RSS was
    /// 21.5 MB instead of 9.7 MB. An environment override would make this test meaningless.
    #[test]
    #[allow(unsafe_code)]
    fn arenas_are_committed_on_demand() {
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some() {
            return;
        }
        // SAFETY: reads one option; no pointers involved.
        let v = unsafe { libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) };
        assert_eq!(
            v, 0,
            "mimalloc was built without MI_DEFAULT_ARENA_EAGER_COMMIT=0"
        );
    }
}
