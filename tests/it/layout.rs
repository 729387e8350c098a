//! The workspace's tiers (docs/architecture.md §1): every crate may depend only on crates of a
//! lower tier, `policy` on nothing at all, and only the root package (with its `demo` feature)
//! on the emulator. Read from the crates' own manifests, so an upward arrow fails here.

use std::collections::BTreeMap;
use std::path::Path;

/// The tier of each workspace crate; the emulator is test support, usable by nothing but the
/// root package and dev-dependencies.
const TIERS: &[(&str, u8)] = &[
    ("policy", 0),
    ("base", 0),
    ("config", 1),
    ("store", 1),
    ("metrics", 1),
    ("identity", 2),
    ("device", 2),
    ("landing", 2),
    ("access", 3),
    ("sync", 3),
    ("edge", 4),
    ("admin", 4),
    ("emulator", 5),
];

fn tier(name: &str) -> Option<u8> {
    TIERS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The internal crates named in one table (`[dependencies]` or `[dev-dependencies]`).
fn internal_deps(manifest: &toml::Table, table: &str) -> Vec<String> {
    manifest
        .get(table)
        .and_then(|t| t.as_table())
        .map(|t| t.keys().filter(|k| tier(k).is_some()).cloned().collect())
        .unwrap_or_default()
}

fn manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn crates_depend_only_downward() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let t =
            tier(&name).unwrap_or_else(|| panic!("crates/{name} has no tier in this test and docs/architecture.md"));
        let m = manifest(&dir.join("Cargo.toml"));
        let deps = internal_deps(&m, "dependencies");
        for d in &deps {
            let dt = tier(d).unwrap();
            // The emulator keeps its inventory in the store's model types; nothing else may
            // reach the emulator outside dev-dependencies.
            assert!(
                d != "emulator",
                "crates/{name} depends on the emulator outside dev-dependencies"
            );
            assert!(
                dt < t,
                "crates/{name} (tier {t}) depends on {d} (tier {dt}): arrows must point down"
            );
        }
        if name == "policy" {
            let all = m.get("dependencies").and_then(|t| t.as_table()).map_or(0, |t| t.len());
            assert_eq!(all, 0, "policy is std-only; it depends on {deps:?}");
        }
        seen.insert(name, deps);
    }
    assert_eq!(seen.len(), TIERS.len(), "every tier has its crate: {seen:?}");

    // The root package: the emulator only behind the `demo` feature.
    let m = manifest(&root.join("Cargo.toml"));
    let emulator = m["dependencies"]["emulator"]
        .as_table()
        .expect("emulator is a table entry");
    assert_eq!(
        emulator.get("optional").and_then(|v| v.as_bool()),
        Some(true),
        "emulator must be optional"
    );
    let default = m["features"]
        .get("default")
        .and_then(|v| v.as_array())
        .map_or(0, |v| v.len());
    assert_eq!(default, 0, "no default features: a plain build is the production build");
    let demo: Vec<&str> = m["features"]["demo"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(demo.contains(&"dep:emulator"), "{demo:?}");
}
