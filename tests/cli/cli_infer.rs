//! `qtrain infer` / `qtrain info` as a user runs them: greedy output equals transformers'
//! generation, `--prompt` prints only the reply, and bad model folders give a clear error and a
//! non-zero exit instead of a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{fixture, Reference};
use qtrain_data::QwenTokenizer;
use qtrain_model::safetensors_io::{write_safetensors, HostTensor, HostTensorData, SafetensorsStore};

fn qtrain(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qtrain")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Copy a fixture model folder so a test can break it.
fn copy_model(name: &str, dst: &Path) -> PathBuf {
    let dir = dst.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn greedy_reply_on_stdout_equals_transformers_generation() {
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let r = Reference::open(name);
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}/reference.json"))).unwrap()).unwrap();
        let messages = reference["prompt_messages"].as_array().unwrap();
        let system = messages.iter().find(|m| m["role"] == "system").map(|m| m["content"].as_str().unwrap());
        let user = messages.iter().find(|m| m["role"] == "user").unwrap()["content"].as_str().unwrap();
        let want_ids = r.u32s("greedy.output_ids");
        let tokenizer = QwenTokenizer::from_file(fixture(&format!("{name}/tokenizer.json"))).unwrap();
        let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
        let content: Vec<u32> =
            want_ids.iter().copied().filter(|&t| t != im_end && t != tokenizer.token_to_id("<|endoftext|>").unwrap()).collect();
        let want_text = tokenizer.decode(&content, false).unwrap();
        let max_new = want_ids.len().to_string();
        let model = fixture(name);
        let mut args = vec![
            "infer",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            user,
            "--temperature",
            "0",
            "--repetition_penalty",
            "1",
            "--max_new_tokens",
            &max_new,
        ];
        if let Some(s) = system {
            args.extend(["--system", s]);
        }
        for stream in ["true", "false"] {
            let mut a = args.clone();
            a.extend(["--stream", stream]);
            let (code, stdout, stderr) = qtrain(&a);
            assert_eq!(code, 0, "{name}: {stderr}");
            assert_eq!(stdout, format!("{want_text}\n"), "{name} (stream {stream}): reply differs from transformers' greedy generation");
            assert!(stderr.contains("[qtrain]"), "logs go to stderr");
        }
    }
}

#[test]
fn adapter_changes_the_reply_and_info_describes_the_model() {
    let model = fixture("tiny-qwen2");
    let base = qtrain(&["infer", "--model", model.to_str().unwrap(), "--prompt", "Hi", "--temperature", "0", "--max_new_tokens", "12"]);
    let lora = fixture("tiny-qwen2-lora");
    let with = qtrain(&[
        "infer",
        "--model",
        model.to_str().unwrap(),
        "--adapters",
        lora.to_str().unwrap(),
        "--prompt",
        "Hi",
        "--temperature",
        "0",
        "--max_new_tokens",
        "12",
    ]);
    assert_eq!((base.0, with.0), (0, 0), "{}{}", base.2, with.2);
    assert_ne!(base.1, with.1, "the adapter must change the greedy reply");
    let (code, stdout, stderr) = qtrain(&["info", "--model", fixture("tiny-qwen3").to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Qwen3ForCausalLM") && stdout.contains("364992") && stdout.contains("tied"), "{stdout}");
    let (code, stdout, _) = qtrain(&["info", "--model", fixture("tiny-qwen2").to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["config"]["num_kv_heads"], 2);
}

/// Runs `infer` and `info` on a broken folder: both must fail cleanly with `expect` in stderr.
fn assert_clean_failure(dir: &Path, expect: &str) {
    for args in [vec!["infer", "--model", dir.to_str().unwrap(), "--prompt", "hi"], vec!["info", "--model", dir.to_str().unwrap()]] {
        let (code, _, stderr) = qtrain(&args);
        assert_eq!(code, 1, "{args:?}: expected exit code 1, got {code}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: error should mention {expect:?}: {stderr}");
    }
}

#[test]
fn bad_model_folders_fail_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing folder / missing files.
    assert_clean_failure(&tmp.path().join("nope"), "nope");
    let dir = copy_model("tiny-qwen2", tmp.path());
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_clean_failure(&dir, "config.json");
    // Malformed config.
    std::fs::write(dir.join("config.json"), "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64,").unwrap();
    assert_clean_failure(&dir, "malformed JSON");
    // Unknown architecture.
    let cfg = std::fs::read_to_string(fixture("tiny-qwen2/config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.replace("Qwen2ForCausalLM", "MistralForCausalLM").replace("\"qwen2\"", "\"mistral\""))
        .unwrap();
    assert_clean_failure(&dir, "MistralForCausalLM");
    // Sliding window on.
    std::fs::write(dir.join("config.json"), cfg.replace("\"use_sliding_window\": false", "\"use_sliding_window\": true")).unwrap();
    assert_clean_failure(&dir, "sliding");
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    // A weight with the wrong shape, named in the error.
    let store = SafetensorsStore::open_file(&fixture("tiny-qwen2/model.safetensors")).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = store.names().map(|n| (n.to_string(), store.read(n).unwrap())).collect();
    for (name, t) in tensors.iter_mut() {
        if name == "model.layers.1.mlp.up_proj.weight" {
            *t = HostTensor {
                shape: vec![t.shape[0] - 1, t.shape[1]],
                data: HostTensorData::F32(t.to_f32()[..(t.shape[0] - 1) * t.shape[1]].to_vec()),
            };
        }
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
    assert_clean_failure(&dir, "model.layers.1.mlp.up_proj.weight has shape [159, 64], expected [160, 64]");
    // A missing weight.
    tensors.retain(|(n, _)| n != "model.layers.0.self_attn.k_proj.bias");
    write_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
    assert_clean_failure(&dir, "missing tensor model.layers.0.self_attn.k_proj.bias");
    // Truncated and corrupt files.
    let bytes = std::fs::read(fixture("tiny-qwen2/model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(&dir, "truncated or corrupt");
    std::fs::write(dir.join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    assert_clean_failure(&dir, "model.safetensors");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (code, _, stderr) = qtrain(&["infer", "--model", dir.to_str().unwrap(), "--prompt", "hi"]);
    assert!(code == 1 && stderr.contains("no model.safetensors") && !stderr.contains("panicked"), "{stderr}");
    // `info` needs only config.json: it predicts memory before any weight is there.
    let (code, stdout, stderr) = qtrain(&["info", "--model", dir.to_str().unwrap()]);
    assert!(code == 0 && stdout.contains("LoRA training step") && !stdout.contains("stored as"), "{stdout}{stderr}");
    // A sharded checkpoint whose index names a missing shard.
    let sharded = copy_model("tiny-qwen3", tmp.path());
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    assert_clean_failure(&sharded, "model-00002-of-00002.safetensors");
    // Missing tokenizer (infer only).
    let dir = copy_model("tiny-qwen3", &tmp.path().join("b"));
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let (code, _, stderr) = qtrain(&["infer", "--model", dir.to_str().unwrap(), "--prompt", "hi"]);
    assert!(code == 1 && stderr.contains("tokenizer.json") && !stderr.contains("panicked"), "{stderr}");
    // Bad adapter folder.
    let (code, _, stderr) = qtrain(&[
        "infer",
        "--model",
        fixture("tiny-qwen3").to_str().unwrap(),
        "--adapters",
        fixture("tiny-qwen2-lora").to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(code == 1 && stderr.contains("do not fit") && !stderr.contains("panicked"), "{stderr}");
    // Bad sampling values.
    let (code, _, stderr) = qtrain(&["infer", "--model", fixture("tiny-qwen3").to_str().unwrap(), "--prompt", "hi", "--top_p", "1.5"]);
    assert!(code == 1 && stderr.contains("top_p"), "{stderr}");
}

/// `info --shape` predicts GPU and CPU memory with no folder at all, and a CPU run that cannot
/// fit is refused before it allocates, with the numbers and what to change.
#[test]
fn memory_is_predicted_and_runs_that_cannot_fit_are_refused() {
    let (code, stdout, stderr) = qtrain(&["info", "--shape", "qwen2.5-7b", "--max_length", "256", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let gib = |x: &serde_json::Value| x.as_f64().unwrap() / (1u64 << 30) as f64;
    let cpu_lora = gib(&v["cpu"]["lora_memory"]["total_bytes"]);
    assert!(cpu_lora > 14.5 && cpu_lora < 17.0, "Qwen2.5-7B LoRA at 256 tokens on the CPU: {cpu_lora} GiB");
    assert!(gib(&v["inference_memory"]["total_bytes"]) > 14.0);
    // A 7B model widened to f32 (≈ 28 GiB of weights) cannot fit on the 24 GiB machines we
    // build on (every developer and CI machine of this project).
    let (code, _, stderr) = qtrain(&["bench", "--shape", "qwen2.5-7b", "--torch_dtype", "float32", "--device", "cpu", "--what", "train"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("needs about") && stderr.contains("GiB available") && stderr.contains("--torch_dtype bfloat16"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `export --torch_dtype bfloat16` writes the merged f32 model in bf16, says so in config.json,
/// and still passes the merge self-check (against base + adapter, within bf16's tolerance).
#[test]
fn export_writes_the_requested_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged-bf16");
    let (model, lora) = (fixture("tiny-qwen2"), fixture("tiny-qwen2-lora"));
    let export = |dtype: &str| {
        let (model, lora, out) = (model.to_str().unwrap(), lora.to_str().unwrap(), out.to_str().unwrap());
        qtrain(&["export", "--model", model, "--adapters", lora, "--merge_lora", "true", "--torch_dtype", dtype, "--output_dir", out])
    };
    let (code, stdout, stderr) = export("bfloat16");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), out.to_str().unwrap());
    let store = SafetensorsStore::open_model_folder(&out).unwrap();
    assert_eq!(store.dtype("model.layers.0.self_attn.q_proj.weight").unwrap(), qtrain_core::DType::BF16);
    assert_eq!(store.dtype("model.norm.weight").unwrap(), qtrain_core::DType::BF16);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    let err = export("int4").2;
    assert!(err.contains("--torch_dtype") && err.contains("bfloat16") && !err.contains("panicked"), "{err}");
}
