//! Every shipped preset parses as `qtrain train` arguments, and opens with the command that
//! runs it.

use std::path::Path;

use qtrain_train::TrainArgs;

#[test]
fn every_preset_parses_and_names_its_command() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# qtrain train"), "{}: the first line must be the command that runs it", path.display());
        let args = TrainArgs::from_toml_str(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!args.dataset.is_empty(), "{}: no dataset", path.display());
        count += 1;
    }
    assert!(count >= 2, "presets/ should hold the embedded and the 7B self-cognition presets");
}
