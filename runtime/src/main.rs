//! The `estate` command line.
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "estate",
    version,
    about = "State management for elastic network functions"
)]
struct Cli {}

fn main() {
    Cli::parse();
    println!("estate {}", env!("CARGO_PKG_VERSION"));
}
