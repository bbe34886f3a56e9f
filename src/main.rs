//! The `ebb` binary: everything is in the library; see `ebb::cli`.

fn main() -> std::process::ExitCode {
    ebb::cli::main()
}
