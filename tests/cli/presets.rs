//! Every shipped preset parses (and resolves) as the arguments of the command it opens with
//! (`qtrain train` or `qtrain pt`).

use std::path::Path;

use qtrain_train::{TrainArgs, TrainCommand};

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
        let command = match text.split_whitespace().nth(2) {
            Some("train") => TrainCommand::Train,
            Some("pt") => TrainCommand::Pt,
            _ => panic!("{}: the first line must be the command that runs it (`# qtrain train …` or `# qtrain pt …`)", path.display()),
        };
        let mut args = TrainArgs::from_toml_str_for(command, &text, &path).unwrap_or_else(|e| panic!("{e}"));
        // A `--dataset` on the command line of the first line counts as the preset's dataset.
        if args.dataset.is_empty() && text.lines().next().unwrap().contains("--dataset ") {
            args.dataset.push("from-the-command-line".into());
        }
        assert!(!args.dataset.is_empty(), "{}: no dataset", path.display());
        args.resolve(40960).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if command == TrainCommand::Pt {
            assert!(!args.use_chat_template && args.loss_scale == qtrain_train::LossScaleArg::All, "{}: pt's defaults", path.display());
        }
        count += 1;
    }
    assert!(count >= 3, "presets/ should hold the embedded and 7B self-cognition presets and the Qwen3-0.6B pretraining one");
}
