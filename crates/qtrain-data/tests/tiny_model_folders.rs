//! Loading the text side of the tiny Hugging Face model folders
//! (`tests/fixtures/tiny-qwen2`, `tests/fixtures/tiny-qwen3`: a reduced Qwen BPE,
//! real chat templates, generation_config.json) and checking it against what
//! transformers produced for them (`reference.json`, `reference.safetensors`).

use std::collections::HashMap;
use std::path::PathBuf;

use qtrain_data::{ModelTextAssets, RenderRequest};
use serde_json::Value;

const REGENERATE: &str = "fixtures are produced by transformers: regenerate them with \
                          `python3 tools/make_fixtures.py` (see tools/README.md)";

fn folder(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(name)
}

/// The i64 tensors of a safetensors file, as (shape, values).
fn read_i64_tensors(path: &std::path::Path) -> HashMap<String, (Vec<usize>, Vec<i64>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut out = HashMap::new();
    for (name, info) in header {
        if info["dtype"] != "I64" {
            continue;
        }
        let shape = info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let offsets = info["data_offsets"].as_array().unwrap();
        let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        let values = data[start..end].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        out.insert(name, (shape, values));
    }
    out
}

fn to_u32(ids: &[i64]) -> Vec<u32> {
    ids.iter().map(|&i| u32::try_from(i).unwrap()).collect()
}

fn check_folder(name: &str, expected_temperature: f64, expected_top_p: f64) {
    let dir = folder(name);
    let assets = ModelTextAssets::load(&dir).unwrap_or_else(|e| panic!("{e}; {REGENERATE}"));
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let tensors = read_i64_tensors(&dir.join("reference.safetensors"));
    let tok = &assets.tokenizer;

    // Reduced vocabulary: 4096 BPE ranks, then the 26 added tokens.
    assert_eq!(tok.vocab_size(), 4096 + 26, "[{name}]");
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(4098), "[{name}]");
    assert_eq!(assets.eos_token_ids(), vec![4098, 4096], "[{name}]");
    let generation = &assets.generation_config;
    assert_eq!(generation.pad_token_id, Some(4096));
    assert_eq!(generation.temperature, Some(expected_temperature), "[{name}]");
    assert_eq!(generation.top_p, Some(expected_top_p), "[{name}]");
    assert_eq!(generation.top_k, Some(20), "[{name}]");
    assert_eq!(assets.tokenizer_config.eos_token.as_deref(), Some("<|im_end|>"));
    assert_eq!(assets.tokenizer_config.pad_token.as_deref(), Some("<|endoftext|>"));

    // The greedy-generation prompt: rendering and ids as transformers made them.
    let template = assets.chat_template.as_ref().expect("tiny folders have a chat template");
    let request = RenderRequest {
        messages: &reference["prompt_messages"],
        tools: None,
        add_generation_prompt: reference["prompt_add_generation_prompt"].as_bool().unwrap(),
        enable_thinking: None,
    };
    let rendered = template.render(&request).unwrap();
    assert_eq!(rendered, reference["prompt_rendered"].as_str().unwrap(), "[{name}] prompt rendering; {REGENERATE}");
    let prompt_ids = &tensors["greedy.prompt_ids"].1;
    assert_eq!(tok.encode(&rendered).unwrap(), to_u32(prompt_ids), "[{name}] prompt ids; {REGENERATE}");

    // The batch texts: ids of the attended positions of each (right-padded) row.
    let (shape, batch_ids) = &tensors["batch.input_ids"];
    let mask = &tensors["batch.attention_mask"].1;
    let texts = reference["batch_texts"].as_array().unwrap();
    assert_eq!(shape[0], texts.len());
    for (row, text) in texts.iter().enumerate() {
        let range = row * shape[1]..(row + 1) * shape[1];
        let ids: Vec<i64> = batch_ids[range.clone()].iter().zip(&mask[range]).filter(|(_, &m)| m == 1).map(|(&id, _)| id).collect();
        // Rows are the texts' ids truncated to at most 17 tokens.
        assert_eq!(ids.len() as u64, reference["batch_lengths"][row].as_u64().unwrap());
        let ours = tok.encode(text.as_str().unwrap()).unwrap();
        assert!(ours.len() >= ids.len(), "[{name}] batch text {row}: {ours:?}");
        assert_eq!(ours[..ids.len()], to_u32(&ids), "[{name}] batch text {row}: {text}");
    }

    // Generated ids decode (at once and streamed) to transformers' text.
    let output = to_u32(&tensors["greedy.output_ids"].1);
    let expected_text = reference["greedy_output_text"].as_str().unwrap();
    assert_eq!(tok.decode(&output, false).unwrap(), expected_text, "[{name}]");
    let mut stream = tok.stream_decoder(false);
    let mut streamed = String::new();
    for &id in &output {
        streamed.push_str(&stream.push(id).unwrap());
    }
    streamed.push_str(&stream.finish().unwrap());
    assert_eq!(streamed, expected_text, "[{name}] streamed");
}

#[test]
fn tiny_qwen2_folder_matches_transformers() {
    check_folder("tiny-qwen2", 0.7, 0.8);
}

#[test]
fn tiny_qwen3_folder_matches_transformers() {
    check_folder("tiny-qwen3", 0.6, 0.95);
}
