//! The interactive `qtrain infer` chat through piped stdin, as a user meets it: a conversation
//! that outgrows the context keeps going after a warning, `/help` lists the commands, an unknown
//! `/command` is refused without reaching the model, `--prompt` stops at the context limit with
//! a note, and Ctrl-C stops a reply without ending the session.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::common::{fixture, s, text};

/// Run a chat with `input` on stdin; returns (exit code, stdout, stderr).
fn chat(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qtrain"))
        .args(["infer", "--device", "cpu", "--temperature", "0"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Lines of the per-reply statistics: one per message the model answered.
fn replies(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(" prompt tokens, ")).collect()
}

#[test]
fn a_chat_that_fills_the_context_keeps_going_and_commands_stay_local() {
    let model = fixture("tiny-qwen2");
    let input = "/help\n/bogus now\nhello there\n/usr/bin is a folder?\nanother message\nand one more\n";
    let (code, stdout, stderr) = chat(&["--model", s(&model), "--max_length", "160", "--max_new_tokens", "200"], input);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Error"), "{stderr}");
    assert!(stderr.contains("/clear") && stderr.contains("/exit") && stderr.contains("Ctrl-C"), "/help lists the commands: {stderr}");
    assert!(stderr.contains("unknown command /bogus (not sent to the model)"), "{stderr}");
    // Four messages answered (a path is a message, not a command); /help and /bogus are not.
    let answered = replies(&stderr);
    assert_eq!(answered.len(), 4, "{stderr}");
    assert_eq!(stdout.lines().filter(|l| !l.is_empty()).count(), 4, "{stdout}");
    // The first reply runs into the 160-token limit; every later turn drops the oldest to make room.
    assert!(answered[0].contains("(context full)"), "{stderr}");
    let warning = stderr.find("the conversation reached the context of 160 tokens").expect(&stderr);
    assert!(stderr[warning..].contains(" prompt tokens, "), "a reply follows the warning: {stderr}");
    assert!(!stderr.contains("StopToken") && !stderr.contains("ContextFull"), "no debug text: {stderr}");
}

#[test]
fn a_long_reply_to_a_prompt_stops_at_the_context_with_a_note() {
    let model = fixture("tiny-qwen3");
    let (code, stdout, stderr) = chat(&["--model", s(&model), "--prompt", "hi", "--max_new_tokens", "2000"], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the reply stopped at the context limit of 512 tokens"), "{stderr}");
    assert!(replies(&stderr)[0].contains("(context full)"), "{stderr}");
    assert!(!stdout.trim().is_empty());
    // --max_length lowers the limit; --model_type must name the folder's family.
    let (code, _, stderr) = chat(&["--model", s(&model), "--prompt", "hi", "--max_new_tokens", "2000", "--max_length", "64"], "");
    assert!(code == 0 && stderr.contains("context limit of 64 tokens"), "{stderr}");
    let (code, _, stderr) = chat(&["--model", s(&model), "--prompt", "hi", "--model_type", "qwen2_5"], "");
    assert!(code == 1 && stderr.contains("--model_type qwen2_5 does not match") && stderr.contains("Qwen3ForCausalLM"), "{stderr}");
    let (code, _, stderr) = chat(&["--model", s(&model), "--prompt", "hi", "--model_type", "qwen3", "--infer_backend", "vllm"], "");
    assert!(code == 0 && stderr.contains("--infer_backend vllm: qtrain has one inference engine"), "{stderr}");
}

#[test]
fn merge_lora_gives_the_same_reply() {
    let (model, lora) = (fixture("tiny-qwen2"), fixture("tiny-qwen2-lora"));
    let args = ["--model", s(&model), "--adapters", s(&lora), "--prompt", "Hi", "--max_new_tokens", "24"];
    let (_, attached, _) = chat(&args, "");
    let (code, merged, stderr) = chat(&[&args[..], &["--merge_lora", "true"]].concat(), "");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("merged into the weights in memory"), "{stderr}");
    assert_eq!(merged, attached);
}

/// Ctrl-C during a reply stops that reply; the chat then answers the next message.
#[test]
fn ctrl_c_stops_the_reply_not_the_chat() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qtrain"))
        .args(["infer", "--device", "cpu", "--temperature", "0", "--max_new_tokens", "1500"])
        .env("QTRAIN_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"tell me everything\n").unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap(); // the reply has started
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    stdin.write_all(b"and now?\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopping the reply") && stderr.contains("reply stopped by Ctrl-C"), "{stderr}");
    let answered = replies(&stderr);
    assert_eq!(answered.len(), 2, "the second message is answered: {stderr}");
    assert!(answered[0].contains("(stopped)") && !answered[1].contains("(stopped)"), "{stderr}");
    // With --prompt, the interrupted reply is printed as far as it got and the exit code says so.
    let mut child = Command::new(env!("CARGO_BIN_EXE_qtrain"))
        .args(["infer", "--device", "cpu", "--temperature", "0", "--max_new_tokens", "1500", "--prompt", "tell me everything"])
        .env("QTRAIN_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(replies(&stderr)[0].contains("(stopped)"), "{stderr}");
}
