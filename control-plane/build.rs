//! Cargo rebuilds when a migration is added: `sqlx::migrate!` embeds the directory at compile
//! time but does not tell Cargo to watch it.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
