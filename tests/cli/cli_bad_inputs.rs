//! The bad-input catalog (issue 16): broken or hostile model folders, adapters, tokenizers,
//! templates, datasets, flags, checkpoints and output folders, each run through the `qtrain`
//! binary. Every case must fail with a non-zero exit, no panic, no Rust debug text, the
//! culprit (a file, tensor, flag or value) named exactly once, and nothing half-written
//! (no `*.tmp`, no `checkpoint-*`, no weights file that was not there before).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::{fixture, qtrain, s, text, write_qa_jsonl, QA};
use serde_json::{json, Value};

/// One bad input: the command to run and the text its error must contain exactly once.
struct Case {
    name: &'static str,
    args: Vec<String>,
    culprit: String,
}

/// The files under `dir`, recursively.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        }
        out.insert(path);
    }
    out
}

/// Run one case inside `root` (its scratch folder); `Err` says what was wrong.
fn check(case: &Case, root: &Path) -> Result<(), String> {
    let before = files_under(root);
    let out = qtrain(&case.args);
    let err = text(&out.stderr);
    let mut problems = Vec::new();
    if out.status.success() {
        problems.push("exited 0".to_string());
    }
    if err.contains("panicked") || out.status.code() == Some(101) {
        problems.push("panicked".to_string());
    }
    // Rust debug formatting of errors (`Os { code: 2, kind: NotFound, .. }`, `Error("..")`).
    if ["Os {", "kind: ", "Error(", "Custom {"].iter().any(|debug| err.contains(debug)) {
        problems.push("Rust debug text in the message".to_string());
    }
    let named = err.matches(case.culprit.as_str()).count();
    if named != 1 {
        problems.push(format!("names `{}` {named} times", case.culprit));
    }
    for new in files_under(root).difference(&before) {
        let name = new.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".tmp") || name.starts_with("checkpoint-") || name.ends_with(".safetensors") {
            problems.push(format!("left {} behind", new.display()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}\n  qtrain {}\n  stderr: {}", case.name, problems.join("; "), case.args.join(" "), err.trim()))
    }
}

/// Run every case; report all failures at once.
fn run_catalog(root: &Path, cases: Vec<Case>) {
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c, root).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

const MODEL_FILES: [&str; 5] = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

/// A fresh copy of the tiny Qwen2 model at `root/name`.
fn model_copy(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in MODEL_FILES {
        std::fs::copy(fixture("tiny-qwen2").join(f), dir.join(f)).unwrap();
    }
    dir
}

/// A fresh copy of the tiny Qwen2 LoRA adapter at `root/name`.
fn adapter_copy(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture("tiny-qwen2-lora").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// Rewrite a safetensors file's JSON header (the data bytes stay as they are).
fn edit_safetensors_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

fn infer(model: &Path) -> Vec<String> {
    strings(&["infer", "--model", s(model), "--prompt", "hi", "--max_new_tokens", "2"])
}

fn train(model: &Path, dataset: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&["train", "--model", s(model), "--dataset", dataset, "--output_dir", s(out)]);
    if !extra.contains(&"--max_steps") {
        args.extend(strings(&["--max_steps", "1"]));
    }
    args.extend(strings(extra));
    args
}

fn case(name: &'static str, args: Vec<String>, culprit: impl Into<String>) -> Case {
    Case { name, args, culprit: culprit.into() }
}

#[test]
fn broken_model_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut cases = Vec::new();

    let m = model_copy(root, "no-config");
    std::fs::remove_file(m.join("config.json")).unwrap();
    cases.push(case("config.json missing", infer(&m), s(&m.join("config.json"))));

    let m = model_copy(root, "config-not-json");
    std::fs::write(m.join("config.json"), "{\"architectures\": [\"Qwen2ForCausalLM\"],").unwrap();
    cases.push(case("config.json cut short", infer(&m), s(&m.join("config.json"))));

    let m = model_copy(root, "llama");
    edit_json(&m.join("config.json"), |c| c["architectures"] = json!(["LlamaForCausalLM"]));
    cases.push(case("another architecture", infer(&m), "LlamaForCausalLM"));

    let m = model_copy(root, "billion-layers");
    edit_json(&m.join("config.json"), |c| c["num_hidden_layers"] = json!(1_000_000_000u64));
    cases.push(case("a billion layers (issue 16 C)", infer(&m), "num_hidden_layers 1000000000"));

    let m = model_copy(root, "huge-context");
    edit_json(&m.join("config.json"), |c| c["max_position_embeddings"] = json!(1u64 << 60));
    cases.push(case("2^60 positions (issue 16 D)", infer(&m), "max_position_embeddings 1152921504606846976"));

    let m = model_copy(root, "1e8-context");
    edit_json(&m.join("config.json"), |c| c["max_position_embeddings"] = json!(100_000_000u64));
    let args = strings(&["infer", "--model", s(&m), "--prompt", "hi", "--max_new_tokens", "100000000"]);
    cases.push(case("10^8 positions and a 10^8-token reply", args, "--max_new_tokens"));

    let m = model_copy(root, "huge-vocab");
    edit_json(&m.join("config.json"), |c| c["vocab_size"] = json!(1u64 << 62));
    cases.push(case("a 2^62 vocabulary", infer(&m), "more parameters than a 64-bit count holds"));

    let m = model_copy(root, "no-weights");
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    cases.push(case("model.safetensors missing", infer(&m), "no model.safetensors or"));

    let m = model_copy(root, "cut-weights");
    let bytes = std::fs::read(m.join("model.safetensors")).unwrap();
    std::fs::write(m.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    cases.push(case("model.safetensors cut in half", infer(&m), s(&m.join("model.safetensors"))));

    let m = model_copy(root, "huge-header");
    let mut bytes = std::fs::read(m.join("model.safetensors")).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(m.join("model.safetensors"), &bytes).unwrap();
    cases.push(case("a 2^64-byte safetensors header", infer(&m), s(&m.join("model.safetensors"))));

    let m = model_copy(root, "header-not-json");
    let mut bytes = std::fs::read(m.join("model.safetensors")).unwrap();
    bytes[8..16].copy_from_slice(b"#garbage");
    std::fs::write(m.join("model.safetensors"), &bytes).unwrap();
    cases.push(case("safetensors header not JSON", infer(&m), s(&m.join("model.safetensors"))));

    let m = model_copy(root, "missing-tensor");
    edit_safetensors_header(&m.join("model.safetensors"), |h| {
        let t = h.remove("model.layers.1.mlp.down_proj.weight").unwrap();
        h.insert("model.layers.1.mlp.down_projection.weight".into(), t);
    });
    cases.push(case("a tensor missing", infer(&m), "model.layers.1.mlp.down_proj.weight"));

    let m = model_copy(root, "wrong-shape");
    edit_safetensors_header(&m.join("model.safetensors"), |h| {
        let t = h.get_mut("model.norm.weight").unwrap();
        t["shape"] = json!([8, 8]);
    });
    cases.push(case("a tensor of the wrong shape", infer(&m), "model.norm.weight"));

    let m = model_copy(root, "offsets-past-end");
    edit_safetensors_header(&m.join("model.safetensors"), |h| {
        let t = h.get_mut("model.norm.weight").unwrap();
        t["data_offsets"] = json!([0, 1u64 << 40]);
    });
    cases.push(case("data offsets past the end", infer(&m), s(&m.join("model.safetensors"))));

    let m = model_copy(root, "odd-dtype");
    edit_safetensors_header(&m.join("model.safetensors"), |h| {
        let t = h.get_mut("model.norm.weight").unwrap();
        t["dtype"] = json!("C64");
    });
    cases.push(case("an unknown dtype", infer(&m), s(&m.join("model.safetensors"))));

    for (name, shard) in [("dotdot-shard", "../model.safetensors"), ("absolute-shard", "/etc/passwd")] {
        let m = model_copy(root, name);
        let index = json!({"metadata": {}, "weight_map": {"model.norm.weight": shard}});
        std::fs::write(m.join("model.safetensors.index.json"), index.to_string()).unwrap();
        std::fs::remove_file(m.join("model.safetensors")).unwrap();
        cases.push(case("an index naming a shard outside the folder", infer(&m), shard));
    }

    let m = model_copy(root, "lost-shard");
    let index = json!({"metadata": {}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}});
    std::fs::write(m.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    cases.push(case("an index naming a missing shard", infer(&m), "model-00002-of-00002.safetensors"));

    let nowhere = root.join("no-such-model");
    cases.push(case("no model folder", infer(&nowhere), s(&nowhere)));
    run_catalog(root, cases);
}

#[test]
fn broken_tokenizers_and_templates() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut cases = Vec::new();

    let m = model_copy(root, "no-tokenizer");
    std::fs::remove_file(m.join("tokenizer.json")).unwrap();
    cases.push(case("tokenizer.json missing", infer(&m), "tokenizer.json"));

    let m = model_copy(root, "decoder-comma");
    let json = std::fs::read_to_string(m.join("tokenizer.json")).unwrap();
    let decoder = json.find("\"decoder\": {").unwrap();
    let close = decoder + json[decoder..].find('}').unwrap();
    std::fs::write(m.join("tokenizer.json"), format!("{},{}", &json[..close], &json[close..])).unwrap();
    cases.push(case("a trailing comma in the decoder (issue 16 B)", infer(&m), s(&m.join("tokenizer.json"))));

    let m = model_copy(root, "tokenizer-cut");
    let json = std::fs::read_to_string(m.join("tokenizer.json")).unwrap();
    std::fs::write(m.join("tokenizer.json"), &json[..json.len() / 3]).unwrap();
    cases.push(case("tokenizer.json cut short", infer(&m), s(&m.join("tokenizer.json"))));

    let m = model_copy(root, "tokenizer-empty");
    std::fs::write(m.join("tokenizer.json"), "").unwrap();
    cases.push(case("tokenizer.json empty", infer(&m), s(&m.join("tokenizer.json"))));

    let m = model_copy(root, "tokenizer-model-type");
    edit_json(&m.join("tokenizer.json"), |t| t["model"]["type"] = json!("Nonsense"));
    cases.push(case("an unknown tokenizer model", infer(&m), s(&m.join("tokenizer.json"))));

    let m = model_copy(root, "tokenizer-config-cut");
    std::fs::write(m.join("tokenizer_config.json"), "{\"chat_template\": ").unwrap();
    cases.push(case("tokenizer_config.json cut short", infer(&m), s(&m.join("tokenizer_config.json"))));

    let m = model_copy(root, "percent-brace");
    edit_json(&m.join("tokenizer_config.json"), |t| t["chat_template"] = json!("{%}{{ messages }}"));
    cases.push(case("`{%}` in the template (issue 16 A)", infer(&m), "syntax error"));

    let m = model_copy(root, "endless-template");
    edit_json(&m.join("tokenizer_config.json"), |t| {
        t["chat_template"] = json!("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    });
    cases.push(case("a template that never ends (issue 16 F)", infer(&m), "template took too long"));

    let m = model_copy(root, "wide-indent");
    edit_json(&m.join("tokenizer_config.json"), |t| t["chat_template"] = json!("{{ messages | tojson(indent=100000000000) }}"));
    cases.push(case("tojson with a 10^11 indent (issue 16 F)", infer(&m), "indent 100000000000"));

    let m = model_copy(root, "doubling-template");
    edit_json(&m.join("tokenizer_config.json"), |t| {
        t["chat_template"] =
            json!("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}")
    });
    cases.push(case("a template that doubles a string 60 times (2^60 bytes)", infer(&m), "needs more than 400 MB of memory"));

    let m = model_copy(root, "raise");
    edit_json(&m.join("tokenizer_config.json"), |t| t["chat_template"] = json!("{{ raise_exception('no system role, please') }}"));
    cases.push(case("raise_exception in the template", infer(&m), "no system role, please"));

    let m = model_copy(root, "generation-config");
    std::fs::write(m.join("generation_config.json"), "{\"top_k\": \"many\"}").unwrap();
    cases.push(case("generation_config.json with a string top_k", infer(&m), s(&m.join("generation_config.json"))));
    run_catalog(root, cases);
}

#[test]
fn broken_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = model_copy(root, "model");
    let with_adapter = |a: &Path| {
        let mut args = infer(&model);
        args.extend(strings(&["--adapters", s(a)]));
        args
    };
    let mut cases = Vec::new();

    let a = adapter_copy(root, "no-config");
    std::fs::remove_file(a.join("adapter_config.json")).unwrap();
    cases.push(case("adapter_config.json missing", with_adapter(&a), "adapter_config.json"));

    let a = adapter_copy(root, "config-cut");
    std::fs::write(a.join("adapter_config.json"), "{\"r\": 4,").unwrap();
    cases.push(case("adapter_config.json cut short", with_adapter(&a), s(&a.join("adapter_config.json"))));

    let a = adapter_copy(root, "rank-zero");
    edit_json(&a.join("adapter_config.json"), |c| c["r"] = json!(0));
    cases.push(case("rank 0", with_adapter(&a), s(&a.join("adapter_config.json"))));

    let a = adapter_copy(root, "unknown-module");
    edit_json(&a.join("adapter_config.json"), |c| c["target_modules"] = json!(["frobnicator"]));
    cases.push(case("a target module the model lacks", with_adapter(&a), "frobnicator"));

    let a = adapter_copy(root, "no-weights");
    std::fs::remove_file(a.join("adapter_model.safetensors")).unwrap();
    cases.push(case("adapter weights missing", with_adapter(&a), "adapter_model.safetensors"));

    let a = adapter_copy(root, "weights-cut");
    let bytes = std::fs::read(a.join("adapter_model.safetensors")).unwrap();
    std::fs::write(a.join("adapter_model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    cases.push(case("adapter weights cut short", with_adapter(&a), s(&a.join("adapter_model.safetensors"))));

    let a = adapter_copy(root, "wrong-shape");
    let name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    // [4, 64] → [8, 32]: the same bytes, so only the shape check can catch it.
    edit_safetensors_header(&a.join("adapter_model.safetensors"), |h| h.get_mut(name).unwrap()["shape"] = json!([8, 32]));
    cases.push(case("a LoRA matrix of the wrong shape", with_adapter(&a), "layers.0.self_attn.q_proj"));

    let nowhere = root.join("no-such-adapter");
    cases.push(case("no adapter folder", with_adapter(&nowhere), s(&nowhere)));
    run_catalog(root, cases);
}

#[test]
fn broken_datasets_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = model_copy(root, "model");
    let out = root.join("out");
    let good = write_qa_jsonl(&root.join("good.jsonl"), &QA);
    let write = |name: &str, body: &str| {
        let path = root.join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let row = |q: &str| serde_json::to_string(&crate::common::qa_record(q, "a")).unwrap();
    let mut cases = Vec::new();

    let missing = root.join("missing.jsonl");
    cases.push(case("dataset file missing", train(&model, s(&missing), &out, &[]), s(&missing)));
    let d = write("line2.jsonl", &format!("{}\n{{\"messages\": [\n", row("q")));
    cases.push(case("invalid JSON on line 2", train(&model, s(&d), &out, &[]), format!("{}:2:", s(&d))));
    let d = write("unknown-format.jsonl", "{\"foo\": \"q\", \"bar\": \"a\"}\n");
    cases.push(case("an unknown row format", train(&model, s(&d), &out, &[]), format!("{}:1:", s(&d))));
    let d = write("object.json", "{\n  \"messages\": []\n}\n");
    cases.push(case("one JSON object instead of rows", train(&model, s(&d), &out, &[]), "holds one JSON object"));
    let d = write("empty.jsonl", "");
    cases.push(case("an empty dataset", train(&model, s(&d), &out, &[]), "holds no rows"));
    let d =
        write("role.jsonl", "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n");
    cases.push(case("an unknown role", train(&model, s(&d), &out, &[]), "robot"));
    let d =
        write("number.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": 5}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n");
    cases.push(case("content that is a number", train(&model, s(&d), &out, &[]), format!("{}:1:", s(&d))));
    let spec = format!("{}#1000000000000", s(&good));
    cases.push(case("a 10^12-row sample (issue 16 E)", train(&model, &spec, &out, &[]), "#1000000000000"));
    let spec = format!("{}#ten", s(&good));
    cases.push(case("a sample count that is not a number", train(&model, &spec, &out, &[]), "`ten`"));

    let g = s(&good);
    cases.push(case("--learning_rate abc", train(&model, g, &out, &["--learning_rate", "abc"]), "--learning_rate"));
    cases.push(case("--lora_rank 0", train(&model, g, &out, &["--lora_rank", "0"]), "lora_rank"));
    cases.push(case("--max_length 0", train(&model, g, &out, &["--max_length", "0"]), "max_length"));
    cases.push(case("--split_dataset_ratio 2", train(&model, g, &out, &["--split_dataset_ratio", "2"]), "split_dataset_ratio"));
    cases.push(case("--max_length past the model", train(&model, g, &out, &["--max_length", "100000000000"]), "lower --max_length"));
    cases.push(case("--torch_dtype float8", train(&model, g, &out, &["--torch_dtype", "float8"]), "float8"));
    let toml = write("unknown-key.toml", "learning_rate = 1e-4\nlerning_rate = 2e-4\n");
    cases.push(case("a misspelt TOML key", train(&model, g, &out, &["--config", s(&toml)]), "lerning_rate"));
    let toml = write("broken.toml", "learning_rate = [\n");
    cases.push(case("a TOML syntax error", train(&model, g, &out, &["--config", s(&toml)]), s(&toml)));
    run_catalog(root, cases);
}

/// A LoRA checkpoint of the tiny model after one step (made once per test binary).
fn real_checkpoint() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
        let out = tmp.path().join("out");
        let args = train(&fixture("tiny-qwen2"), s(&data), &out, &["--save_steps", "1"]);
        let (stdout, _) = crate::common::succeeds(&args);
        let checkpoint = PathBuf::from(stdout.trim());
        (tmp, checkpoint)
    })
    .1
}

fn checkpoint_copy(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(real_checkpoint()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[test]
fn broken_checkpoints_and_output_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = model_copy(root, "model");
    let data = write_qa_jsonl(&root.join("train.jsonl"), &QA);
    let out = root.join("out");
    // The checkpoint alone (its run's own arguments): a resume that changed model or data would
    // be refused for that before its files are looked at.
    let resume = |c: &Path| strings(&["train", "--resume_from_checkpoint", s(c), "--output_dir", s(&out), "--max_steps", "2"]);
    let mut cases = Vec::new();

    let nowhere = root.join("checkpoint-99");
    cases.push(case("no checkpoint folder", resume(&nowhere), s(&nowhere)));
    let c = checkpoint_copy(root, "checkpoint-1-no-optimizer");
    std::fs::remove_file(c.join("optimizer.safetensors")).unwrap();
    cases.push(case("a checkpoint without optimizer.safetensors", resume(&c), "optimizer.safetensors"));
    let c = checkpoint_copy(root, "checkpoint-1-state-cut");
    std::fs::write(c.join("trainer_state.json"), "{\"global_step\": ").unwrap();
    cases.push(case("trainer_state.json cut short", resume(&c), s(&c.join("trainer_state.json"))));
    let c = checkpoint_copy(root, "checkpoint-1-data-state");
    edit_json(&c.join("data_state.json"), |d| d["micro_batch"] = json!(1u64 << 40));
    cases.push(case("data_state.json pointing past the data", resume(&c), "micro-batch 1099511627776"));
    let c = checkpoint_copy(root, "checkpoint-1-optimizer-cut");
    let bytes = std::fs::read(c.join("optimizer.safetensors")).unwrap();
    std::fs::write(c.join("optimizer.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    cases.push(case("optimizer.safetensors cut in half", resume(&c), s(&c.join("optimizer.safetensors"))));
    let c = checkpoint_copy(root, "checkpoint-1-rng");
    std::fs::write(c.join("rng_state.json"), "[1, 2, 3]").unwrap();
    cases.push(case("rng_state.json of the wrong shape", resume(&c), s(&c.join("rng_state.json"))));

    let file = root.join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    cases.push(case("--output_dir is a file", train(&model, s(&data), &file, &[]), s(&file)));
    let merged = root.join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    std::fs::write(merged.join("keep.txt"), "user data").unwrap();
    let adapter = adapter_copy(root, "adapter");
    let export = strings(&["export", "--model", s(&model), "--adapters", s(&adapter), "--merge_lora", "true", "--output_dir", s(&merged)]);
    cases.push(case("export into a folder that holds files", export, s(&merged)));
    run_catalog(root, cases);
}
