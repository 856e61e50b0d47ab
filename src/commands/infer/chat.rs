//! The interactive chat and the one-question `--prompt` mode of `qtrain infer`: reading lines,
//! slash commands, Ctrl-C, and printing replies with their notes. A full context, an
//! interrupted reply or a message that is too long never ends the session.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use qtrain_chat::{Chat, ChatError, ChatOptions, ModelFolder};
use qtrain_core::Backend;
use qtrain_model::generate::StopReason;

use super::InferArgs;

const HELP: &str = "\
commands:
  /help           this list
  /clear          forget the conversation (the system prompt stays)
  /exit, /quit    leave (so do Ctrl-D and, between replies, Ctrl-C)
  clear, exit and quit on a line of their own work too, as in `swift infer`.
Ctrl-C during a reply stops the reply. When the conversation outgrows the context, its oldest
turns are dropped (a warning says so).";

/// What one input line asks for.
#[derive(Debug, PartialEq)]
enum Input<'a> {
    Empty,
    Message(&'a str),
    Help,
    Clear,
    Exit,
    /// A `/word` that is no command: never sent to the model.
    Unknown(&'a str),
}

fn parse_line(line: &str) -> Input<'_> {
    let text = line.trim();
    match text {
        "" => Input::Empty,
        "/help" | "/?" => Input::Help,
        "/clear" | "clear" => Input::Clear,
        "/exit" | "/quit" | "exit" | "quit" => Input::Exit,
        // `/word …` is a command; `/usr/bin …` (a path) is a message.
        _ if text.split_whitespace().next().is_some_and(is_command_word) => Input::Unknown(text.split_whitespace().next().unwrap_or(text)),
        _ => Input::Message(text),
    }
}

fn is_command_word(word: &str) -> bool {
    word.strip_prefix('/').is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
}

/// Ctrl-C (and SIGTERM): during a reply, the first one stops the reply; any other one exits.
struct Interrupt {
    replying: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Interrupt {
    fn install() -> Result<Self> {
        let (replying, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (r, s) = (replying.clone(), stop.clone());
        ctrlc::set_handler(move || {
            if r.load(Ordering::SeqCst) && !s.swap(true, Ordering::SeqCst) {
                eprintln!("\n[qtrain] stopping the reply (Ctrl-C again exits)");
            } else {
                eprintln!();
                std::process::exit(130);
            }
        })?;
        Ok(Interrupt { replying, stop })
    }
}

pub(super) fn run<B: Backend>(be: &B, folder: &ModelFolder<B>, args: &InferArgs, options: ChatOptions) -> Result<()> {
    let interrupt = Interrupt::install()?;
    let mut chat = Chat::new(folder, be, options)?;
    chat.set_interrupt(interrupt.stop.clone());
    if let Some(prompt) = &args.prompt {
        if turn(&mut chat, prompt, args.stream, &interrupt)? == StopReason::Cancelled {
            std::process::exit(130); // as an interrupted command: the reply on stdout is partial
        }
        return Ok(());
    }
    eprintln!("[qtrain] interactive chat, context {} tokens: type a message; /help lists the commands.", chat.context_limit());
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("user> ");
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        match parse_line(&line) {
            Input::Empty => {}
            Input::Help => eprintln!("{HELP}"),
            Input::Clear => {
                chat.clear();
                eprintln!("[qtrain] conversation cleared");
            }
            Input::Exit => return Ok(()),
            Input::Unknown(word) => eprintln!("[qtrain] unknown command {word} (not sent to the model); /help lists the commands"),
            Input::Message(text) => match turn(&mut chat, text, args.stream, &interrupt) {
                Err(e) if matches!(e.downcast_ref::<ChatError>(), Some(ChatError::Invalid(_))) => eprintln!("[qtrain] {e}"),
                other => {
                    other?;
                }
            },
        }
    }
}

/// Send one message and print the reply (stdout) and its notes and statistics (stderr);
/// returns why the reply ended.
fn turn<B: Backend>(chat: &mut Chat<'_, B>, text: &str, stream: bool, interrupt: &Interrupt) -> Result<StopReason> {
    let limit = chat.context_limit();
    let dropped = chat.push_user(text)?;
    if dropped > 0 {
        eprintln!(
            "[qtrain] warning: the conversation reached the context of {limit} tokens; the oldest {} dropped to make room (/clear starts over)",
            plural(dropped, "turn was", "turns were")
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    interrupt.replying.store(true, Ordering::SeqCst);
    let sent = chat.reply(|piece| {
        if stream {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    });
    interrupt.replying.store(false, Ordering::SeqCst);
    let reply = sent?;
    if !stream {
        out.write_all(reply.text.as_bytes())?;
    }
    writeln!(out)?;
    out.flush()?;
    let g = &reply.generation;
    match g.stop {
        StopReason::ContextFull => eprintln!("[qtrain] note: the reply stopped at the context limit of {limit} tokens"),
        StopReason::Cancelled => eprintln!("[qtrain] reply stopped by Ctrl-C; it stays in the conversation as far as it got"),
        _ => {}
    }
    eprintln!(
        "[qtrain] {} prompt tokens, {} ({}); prefill {:.2}s, decode {:.1} tokens/s",
        reply.prompt_tokens,
        plural(g.tokens.len(), "new token", "new tokens"),
        g.stop,
        g.prefill_time.as_secs_f64(),
        g.decode_tokens_per_second()
    );
    Ok(g.stop)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_words_are_commands_and_paths_are_messages() {
        assert_eq!(parse_line("  /help \n"), Input::Help);
        assert_eq!(parse_line("exit"), Input::Exit);
        assert_eq!(parse_line("/bogus now"), Input::Unknown("/bogus"));
        assert_eq!(parse_line("/usr/bin is a folder?"), Input::Message("/usr/bin is a folder?"));
        assert_eq!(parse_line("hello /help"), Input::Message("hello /help"));
        assert_eq!(parse_line(" \n"), Input::Empty);
    }
}
