//! The deployment files are valid: the Kubernetes manifests against the API's schemas
//! (`kubernetes-validate --strict`, offline: `kubectl apply --dry-run=client` needs a
//! cluster to ask), and every `KAWA_*` variable they set is a setting Kawa knows.

use std::path::Path;
use std::process::Command;

fn deploy_files(dir: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .{ext} files in {}", root.display());
    files
}

#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(deploy_files("deploy/k8s", "yaml"))
        .output()
        .expect("kubernetes-validate (pip; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `KAWA_SECTION__KEY` (or `KAWA_KEY`) names a key of `config/default.toml`.
fn known_setting(defaults: &toml::Table, var: &str) -> bool {
    let name = var.trim_start_matches("KAWA_").to_ascii_lowercase();
    match name.split_once("__") {
        Some((section, key)) => defaults
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(key)),
        None => defaults.contains_key(&name),
    }
}

#[test]
fn deployment_files_set_only_real_settings() {
    let mut files = deploy_files("deploy/k8s", "yaml");
    files.extend(deploy_files("deploy/systemd", "env"));
    let defaults: toml::Table = kawa::config::DEFAULT_TOML.parse().unwrap();
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("KAWA_") && word.len() > 5 {
                assert!(
                    known_setting(&defaults, word),
                    "{}: {word} is no setting",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} settings found");
}
