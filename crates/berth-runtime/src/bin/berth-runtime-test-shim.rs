//! A stand-in for the `berth` binary in this crate's integration tests: it only dispatches the
//! hidden `__shim` and `__exec` subcommands, exactly as `berth`'s `main` does first.

fn main() {
    match berth_runtime::dispatch_hidden_subcommand() {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!("usage: berth-runtime-test-shim __shim <bundle> | __exec <bundle> <request>");
            std::process::exit(2);
        }
    }
}
