//! The `farmsync` binary: everything lives in the library; see [`farmsync::cli`].

fn main() -> std::process::ExitCode {
    farmsync::cli::main()
}
