//! The `ebb` binary: everything is in the library; see `ebb::cli`.

/// mimalloc: a run allocates and frees millions of small strings (records read back from
/// the spill, keys, request bodies) across threads; it does that faster than glibc's
/// allocator (`cargo bench --bench sync` measures both, see benches/README.md). Built with
/// `no_thp`: mimalloc would otherwise ask for transparent huge pages, and the kernel zeroes
/// 2 MiB at every first touch of one, again after each purge. That took 29% of the CPU of
/// an API-bound run and 0.45 s of a 1M-row first sync (2.72 s against 2.27 s).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ebb::cli::main()
}
