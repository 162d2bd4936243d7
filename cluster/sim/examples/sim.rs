//! `cargo run -p tandem-sim --release --example sim -- --seed 7`: the `tandem sim` command without
//! building the whole ops binary (which links RocksDB).

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    sim: tandem_sim::SimArgs,
}

fn main() {
    let cli = Cli::parse();
    match tandem_sim::run(&cli.sim) {
        Ok(report) => print!("{report}"),
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(1);
        }
    }
}
