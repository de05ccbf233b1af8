//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds `../migrations`
//! at compile time, and cargo would not notice a new file there on its own.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
