//! A real SurrealDB server for flotilla's tests and benchmarks: the same command line as the
//! `surreal` binary (`start --bind 127.0.0.1:PORT --user root --pass root memory`), built
//! from the `surrealdb-server` library so no download is needed.
#![recursion_limit = "256"]

fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
