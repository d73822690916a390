//! The commit this binary is built from, for `--version`: `WASMCONFD_COMMIT` when set (a
//! container build, without `.git`), else that of the git checkout, or `unknown commit` when it
//! is built outside one (from a source archive).

fn main() {
    println!("cargo:rerun-if-env-changed=WASMCONFD_COMMIT");
    if let Ok(commit) = std::env::var("WASMCONFD_COMMIT") {
        println!("cargo:rustc-env=WASMCONFD_COMMIT={commit}");
        return;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|commit| commit.trim().to_string())
        .filter(|commit| !commit.is_empty());
    let commit = commit.as_deref().unwrap_or("unknown commit");
    println!("cargo:rustc-env=WASMCONFD_COMMIT={commit}");
    // Built again when a commit is made or checked out.
    for path in ["../.git/HEAD", "../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
