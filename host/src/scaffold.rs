//! `wasmconfd guest new`: a new guest project, in Rust, Python or JavaScript, that builds as it
//! is and passes its own test (`./test.sh`: build, render a sample cluster through wasmconfd,
//! compare with the expected output).

use anyhow::{Context as _, bail};
use std::path::Path;

/// The languages a project can be started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    #[value(alias = "javascript")]
    Js,
}

/// The componentize-py version Python projects build with (as `scripts/setup.sh` installs it).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Write a new project for guest `name` (also its proto) into `dir`, which must not exist or be
/// empty. A Rust project carries its own copy of the SDK in `sdk/`, so it builds anywhere and
/// can be committed as it is; `sdk` names another SDK directory to use instead.
pub fn create(
    name: &str,
    language: Language,
    dir: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<()> {
    crate::model::check_proto(name)
        .map_err(|e| anyhow::anyhow!("{e}: a guest's name is also the proto its services carry"))?;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "{} already exists and is not empty; choose another --dir",
            dir.display()
        );
    }
    let (files, sdk) = files(name, language, sdk)?;
    write(dir, name, &sdk, files)
}

/// Template files every project has, by path.
const COMMON: &[(&str, &str)] = &[
    ("test.sh", include_str!("../templates/common/test.sh")),
    (
        "test/cluster.yaml",
        include_str!("../templates/common/test/cluster.yaml"),
    ),
    (
        "test/expected.cfg",
        include_str!("../templates/common/test/expected.cfg"),
    ),
    (
        "test/expected.map",
        include_str!("../templates/common/test/expected.map"),
    ),
];

/// The WIT contract, for the languages that generate bindings from it in the project.
const WIT: &[(&str, &str)] = &[
    ("wit/types.wit", include_str!("../../wit/types.wit")),
    ("wit/host.wit", include_str!("../../wit/host.wit")),
    ("wit/world.wit", include_str!("../../wit/world.wit")),
];

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    (
        "sdk/Cargo.toml",
        include_str!("../templates/rust/sdk/Cargo.toml"),
    ),
    ("sdk/src/lib.rs", include_str!("../../guest-sdk/src/lib.rs")),
    ("sdk/src/log.rs", include_str!("../../guest-sdk/src/log.rs")),
    (
        "sdk/src/one_call.rs",
        include_str!("../../guest-sdk/src/one_call.rs"),
    ),
    (
        "sdk/src/testing.rs",
        include_str!("../../guest-sdk/src/testing.rs"),
    ),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("build.sh", include_str!("../templates/rust/build.sh")),
    (".gitignore", include_str!("../templates/rust/gitignore")),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    ("build.sh", include_str!("../templates/python/build.sh")),
    (".gitignore", include_str!("../templates/python/gitignore")),
];

const JS: &[(&str, &str)] = &[
    ("app.js", include_str!("../templates/js/app.js")),
    ("build.sh", include_str!("../templates/js/build.sh")),
    (".gitignore", include_str!("../templates/js/gitignore")),
];

/// The files of a project for guest `name` in `language`, and the SDK directory it uses.
fn files(
    name: &str,
    language: Language,
    sdk: Option<&Path>,
) -> anyhow::Result<(Vec<(&'static str, String)>, String)> {
    let owned = |list: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        list.iter()
            .map(|(path, text)| (*path, text.to_string()))
            .collect()
    };
    let mut files = owned(COMMON);
    files.push(("README.md", readme(language)));
    let sdk = match language {
        Language::Rust => {
            // The SDK generates its bindings from the project's `wit/`.
            files.extend(owned(WIT));
            files.extend(owned(RUST));
            match sdk {
                Some(sdk) => {
                    files.retain(|(path, _)| !path.starts_with("sdk/"));
                    sdk.canonicalize()
                        .with_context(|| format!("the SDK directory {}", sdk.display()))?
                        .display()
                        .to_string()
                }
                None => "sdk".into(),
            }
        }
        Language::Python => {
            files.extend(owned(WIT));
            files.extend(owned(PYTHON));
            String::new()
        }
        Language::Js => {
            files.extend(owned(WIT));
            files.extend(owned(JS));
            files.push(("package.json", package_json(name)?));
            String::new()
        }
    };
    Ok((files, sdk))
}

/// Write `files` into `dir`, with the placeholders filled in; scripts executable.
fn write(dir: &Path, name: &str, sdk: &str, files: Vec<(&str, String)>) -> anyhow::Result<()> {
    let type_name: String = name
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    for (path, text) in files {
        let text = text
            .replace("{{name}}", name)
            .replace("{{type}}", &type_name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", sdk)
            .replace("{{componentize_py}}", COMPONENTIZE_PY);
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(dir))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// The JavaScript project's package.json, with the toolchain pinned as in the example guest.
fn package_json(name: &str) -> anyhow::Result<String> {
    let mut package: serde_json::Value =
        serde_json::from_str(include_str!("../../examples/guests/paths-js/package.json"))?;
    package["name"] = name.into();
    package["description"] = format!("The {name} guest for wasmconfd.").into();
    Ok(serde_json::to_string_pretty(&package)? + "\n")
}

fn readme(language: Language) -> String {
    let (tools, files) = match language {
        Language::Rust => (
            "Rust with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`). The guest \
             uses the `wasmconfd-guest` SDK, a copy of which is in `sdk/` (from the wasmconfd \
             that made this project; commit it with the project); `cargo test` runs its unit \
             tests natively."
                .to_string(),
            "`src/lib.rs`",
        ),
        Language::Python => (
            format!(
                "Python 3.11 or later and componentize-py {COMPONENTIZE_PY} \
                 (`pip install componentize-py=={COMPONENTIZE_PY}`)."
            ),
            "`app.py`",
        ),
        Language::Js => (
            "Node.js 20 or later with npm; `build.sh` installs the componentize-js pinned in \
             `package.json` on first use."
                .to_string(),
            "`app.js`",
        ),
    };
    format!(
        "# {{{{name}}}}\n\n\
         A wasmconfd guest: it routes services with proto `{{{{name}}}}` by Host header to their \
         ready endpoints. The guest is {files}; the interface it implements is in `wit/` (or \
         the SDK).\n\n\
         Tools: {tools}\n\n\
         ```console\n\
         $ ./build.sh                # -> build/{{{{name}}}}.wasm\n\
         $ ./test.sh                 # build, render test/cluster.yaml, haproxy -c, compare with test/expected.*\n\
         $ ./test.sh --update        # accept the current output as expected\n\
         ```\n\n\
         `test.sh` renders with the bundled base guest and checks the whole configuration with \
         `haproxy -c`; it compares only this guest's part. It runs `wasmconfd` from PATH, or \
         the binary named by `WASMCONFD`.\n\n\
         To use it, copy `build/{{{{name}}}}.wasm` into wasmconfd's guest directory under a slot \
         name, e.g. `50-{{{{name}}}}.wasm`, and annotate services with \
         `wasmconfd.io/proto: {{{{name}}}}`. Settings: `--set {{{{name}}}}.bind=:8080`.\n\n\
         ## Running it as a team guest\n\n\
         A platform team runs another team's guest with a scope in its guests configuration \
         (`--guests-config`), which says what the guest sees and may do:\n\n\
         ```yaml\n\
         guests:\n  \
           {{{{name}}}}:\n    \
             trust: team\n    \
             namespaces: [my-team, \"my-team-*\"]   # it receives only these namespaces' services\n    \
             listen-ports: [8080]                 # it may bind only these ports\n    \
             settings: {{bind: \":8080\"}}\n\
         ```\n\n\
         A team guest writes only `backend`, `frontend` and `listen` sections named \
         `{{{{name}}}}` or `{{{{name}}}}-...`/`{{{{name}}}}_...`, and map files named the same way, \
         with the directives of an allow list; it routes only its own services' domains to its \
         own backends, and its servers are its services' endpoints. This project's guest keeps \
         to all of that. What is refused, and why, is in docs/multi-tenant.md in the wasmconfd \
         repository.\n\n\
         Writing guests: docs/guests.md in the wasmconfd repository.\n"
    )
}

#[cfg(test)]
mod tests {
    /// The copy of the SDK a Rust project carries builds with the wit-bindgen the SDK does.
    #[test]
    fn the_sdk_copy_uses_the_workspaces_wit_bindgen() {
        let version = |manifest: &str| {
            manifest
                .lines()
                .find(|line| line.starts_with("wit-bindgen = "))
                .map(str::to_string)
        };
        let workspace = version(include_str!("../../Cargo.toml"));
        assert!(workspace.is_some());
        assert_eq!(
            version(include_str!("../templates/rust/sdk/Cargo.toml")),
            workspace
        );
    }
}
