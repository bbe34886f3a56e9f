//! The `ebb` binary: everything is in the library; see `ebb::cli`.

/// mimalloc: a run allocates and frees millions of small strings (records read back from
/// the spill, keys, request bodies) across threads; it does that faster than glibc's
/// allocator (`cargo bench --bench sync` measures both, see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ebb::cli::main()
}
