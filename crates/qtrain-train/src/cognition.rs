//! "Did it learn?": the held-out self-cognition questions, asked by greedy generation.
//!
//! A run that teaches a model a new identity (`--model_name` / `--model_author`, normally with
//! the bundled `self-cognition` dataset) is judged here by what the model *says*, not only by
//! its loss: each held-out identity question of `qtrain-data` (5 zh, 5 en, none of them a
//! training row; [`qtrain_data::SelfCognition::eval_questions`]) is substituted with the
//! configured name and author for its language, rendered through the model's chat template with
//! the run's system prompt and a generation prompt, and answered greedily (at most
//! [`MAX_NEW_TOKENS`] new tokens, stopping at `<|im_end|>` / `<|endoftext|>`). Two numbers come
//! out:
//!
//! * `self_cognition_acc` — the share of answers that contain both the configured name and the
//!   configured author of the question's language (case-insensitive substrings,
//!   [`qtrain_data::SelfCognitionQuestion::score`]); a leading `<think>…</think>` block is
//!   stripped first, so only the visible reply counts. When one of the two contains the other
//!   (name `qtrain-robot`, author `qtrain`), the shorter one must also occur outside the longer
//!   one ([`score_answer`]): "I am qtrain-robot." names no author. This is the "self-cognition
//!   accuracy" of the seed article.
//! * `repetition_rate` — the share of answers in which some run of [`REPEAT_NGRAM`] consecutive
//!   *tokens* (the model's own token ids, so it works the same for Chinese, which has no spaces
//!   between words, and English) occurs at least [`REPEAT_MIN_COUNT`] times, overlapping
//!   occurrences included. A model that has over-fitted its identity answers tends to loop
//!   ("I am X, an AI assistant developed by Y. I am X, an AI assistant developed by Y. I am …"),
//!   which this flags even when the accuracy is perfect. Answers are capped at 64 tokens, so a
//!   healthy answer of one or two sentences almost never repeats a 4-gram three times.
//!
//! This module must not change the model, write files or decide when it runs (the trainer and
//! `qtrain eval` do).

use std::collections::HashMap;
use std::hash::Hash;

use serde_json::{json, Value};

use qtrain_core::Backend;
use qtrain_data::{
    Bilingual, ChatTemplate, DatasetSource, DatasetSpec, Lang, QwenTokenizer, RenderRequest, SelfCognition, SelfCognitionQuestion,
    SelfCognitionScore, SelfCognitionSubset,
};
use qtrain_model::generate::{generate, GenerateOptions, StopReason};
use qtrain_model::{QwenModel, Sampler, SamplingParams};

use crate::error::Result;

/// Longest answer generated per question, in tokens.
pub const MAX_NEW_TOKENS: usize = 64;
/// Length in tokens of the runs [`repetition_rate`] looks for.
pub const REPEAT_NGRAM: usize = 4;
/// How often one such run must occur for an answer to count as repetitive.
pub const REPEAT_MIN_COUNT: usize = 3;

/// The identity questions of a run, rendered and tokenized once.
#[derive(Clone, Debug)]
pub struct CognitionProbe {
    questions: Vec<SelfCognitionQuestion>,
    /// Prompt token ids per question (template applied, generation prompt appended).
    prompts: Vec<Vec<u32>>,
    /// Tokens that end an answer.
    stop_ids: Vec<u32>,
}

/// One answered question.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CognitionAnswer {
    pub query: String,
    /// `zh` or `en`.
    pub lang: &'static str,
    /// The visible reply (stop token removed, a leading `<think>…</think>` block stripped, trimmed).
    pub answer: String,
    /// Mentions the configured name and author.
    pub correct: bool,
    /// Some [`REPEAT_NGRAM`]-token run occurs [`REPEAT_MIN_COUNT`] or more times.
    pub repetitive: bool,
    /// Cut at [`MAX_NEW_TOKENS`] before a stop token.
    pub truncated: bool,
}

/// The result of asking every question once.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CognitionEval {
    /// Share of correct answers, in [0, 1].
    pub accuracy: f64,
    /// Share of repetitive answers, in [0, 1].
    pub repetition_rate: f64,
    pub answers: Vec<CognitionAnswer>,
}

impl CognitionEval {
    /// A short human-readable line: the two rates and the first English answer as an example.
    pub fn progress_line(&self) -> String {
        let example = self.answers.iter().find(|a| a.lang == "en").or(self.answers.first());
        let example = example
            .map(|a| {
                let short: String = a.answer.chars().take(80).collect();
                let more = if short.len() < a.answer.len() { "…" } else { "" };
                format!(" | e.g. {:?} → {:?}{more}", a.query, short)
            })
            .unwrap_or_default();
        format!("self_cognition_acc {:.4} | repetition_rate {:.4}{example}", self.accuracy, self.repetition_rate)
    }
}

impl CognitionProbe {
    /// The probe of a run: `Some` when both a name and an author are configured (they are
    /// required by the `self-cognition` dataset, and a run with both set is teaching an
    /// identity whatever its data), `None` otherwise. The question subset (e.g. `/no_think`
    /// suffixes for `self-cognition:qwen3`) follows the first `self-cognition` spec among
    /// `dataset_specs`, else the template (as the dataset loader picks it).
    pub fn for_run(
        dataset_specs: &[String],
        name: Option<&Bilingual>,
        author: Option<&Bilingual>,
        system: Option<&str>,
        template: &ChatTemplate,
        tokenizer: &QwenTokenizer,
    ) -> Result<Option<Self>> {
        let (Some(name), Some(author)) = (name, author) else {
            return Ok(None);
        };
        let subset = dataset_specs
            .iter()
            .filter_map(|s| DatasetSpec::parse(s).ok())
            .find_map(|s| match s.source {
                DatasetSource::SelfCognition(subset) => Some(subset),
                DatasetSource::File(_) => None,
            })
            .flatten()
            .unwrap_or_else(|| SelfCognitionSubset::for_template(template));
        let sc = SelfCognition::new(Some(name), Some(author), subset)?;
        Ok(Some(Self::new(&sc, system, template, tokenizer)?))
    }

    /// Render and tokenize `sc`'s held-out questions, each as `[system?, user]` with a
    /// generation prompt (Qwen3's `enable_thinking` left to the template, as training renders).
    pub fn new(sc: &SelfCognition, system: Option<&str>, template: &ChatTemplate, tokenizer: &QwenTokenizer) -> Result<Self> {
        let questions = sc.eval_questions();
        let mut prompts = Vec::with_capacity(questions.len());
        for q in &questions {
            let mut messages: Vec<Value> = Vec::new();
            if let Some(system) = system {
                messages.push(json!({"role": "system", "content": system}));
            }
            messages.push(json!({"role": "user", "content": q.query}));
            let messages = Value::Array(messages);
            let request = RenderRequest { messages: &messages, tools: None, add_generation_prompt: true, enable_thinking: None };
            prompts.push(tokenizer.encode(&template.render(&request)?)?);
        }
        let mut stop_ids: Vec<u32> = ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| tokenizer.token_to_id(t)).collect();
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(CognitionProbe { questions, prompts, stop_ids })
    }

    pub fn num_questions(&self) -> usize {
        self.questions.len()
    }

    /// Ask every question greedily and score the answers.
    pub fn evaluate<B: Backend>(&self, be: &B, model: &QwenModel<B>, tokenizer: &QwenTokenizer) -> Result<CognitionEval> {
        let opts = GenerateOptions { max_new_tokens: MAX_NEW_TOKENS, stop_ids: self.stop_ids.clone() };
        let mut answers = Vec::with_capacity(self.questions.len());
        let mut token_answers = Vec::with_capacity(self.questions.len());
        for (q, prompt) in self.questions.iter().zip(&self.prompts) {
            // Greedy: the seed is never drawn from.
            let mut sampler = Sampler::new(SamplingParams::default(), 0);
            let g = generate(model, be, prompt, &opts, &mut sampler, |_| true)?;
            let ids: Vec<u32> = g.tokens.iter().copied().filter(|id| !self.stop_ids.contains(id)).collect();
            let text = tokenizer.decode_prefix(&ids, false)?;
            let visible = strip_think(&text).trim().to_string();
            answers.push(CognitionAnswer {
                query: q.query.clone(),
                lang: match q.lang {
                    Lang::Zh => "zh",
                    Lang::En => "en",
                },
                correct: score_answer(q, &visible).correct(),
                repetitive: has_repeated_ngram(&ids, REPEAT_NGRAM, REPEAT_MIN_COUNT),
                truncated: g.stop != StopReason::StopToken,
                answer: visible,
            });
            token_answers.push(ids);
        }
        let n = answers.len().max(1) as f64;
        Ok(CognitionEval {
            accuracy: answers.iter().filter(|a| a.correct).count() as f64 / n,
            repetition_rate: repetition_rate(&token_answers),
            answers,
        })
    }
}

/// The reply after a leading `<think>…</think>` block (and the whitespace after it); the text
/// itself when there is none.
pub fn strip_think(answer: &str) -> &str {
    let trimmed = answer.trim_start();
    match trimmed.strip_prefix("<think>").and_then(|rest| rest.split_once("</think>")) {
        Some((_, reply)) => reply.trim_start(),
        None => answer,
    }
}

/// [`SelfCognitionQuestion::score`], except that when the expected name contains the expected
/// author (or the other way round) the shorter one is looked for with the longer one's
/// occurrences removed, so that the name alone does not count as naming the author.
pub fn score_answer(q: &SelfCognitionQuestion, answer: &str) -> SelfCognitionScore {
    let lower = answer.to_lowercase();
    let (name, author) = (q.expected_name.to_lowercase(), q.expected_author.to_lowercase());
    let without = |text: &str, longer: &str| text.replace(longer, "\u{1}");
    let mut score = q.score(answer);
    if name != author && name.contains(&author) {
        score.has_author = without(&lower, &name).contains(&author);
    } else if name != author && author.contains(&name) {
        score.has_name = without(&lower, &author).contains(&name);
    }
    score
}

/// Whether some run of `n` consecutive units occurs at least `min_count` times in `units`
/// (overlapping occurrences count: `a a a a a a` holds `a a a a` three times).
pub fn has_repeated_ngram<T: Eq + Hash>(units: &[T], n: usize, min_count: usize) -> bool {
    if n == 0 || units.len() < n {
        return false;
    }
    let mut counts: HashMap<&[T], usize> = HashMap::new();
    for w in units.windows(n) {
        let c = counts.entry(w).or_insert(0);
        *c += 1;
        if *c >= min_count {
            return true;
        }
    }
    false
}

/// Share of answers (token ids) with a [`REPEAT_NGRAM`]-token run repeated
/// [`REPEAT_MIN_COUNT`] or more times; 0 for no answers.
pub fn repetition_rate<T: Eq + Hash>(answers: &[Vec<T>]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    answers.iter().filter(|a| has_repeated_ngram(a, REPEAT_NGRAM, REPEAT_MIN_COUNT)).count() as f64 / answers.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtrain_data::self_cognition_accuracy;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn repeated_ngrams_are_found_in_loops_not_in_normal_answers() {
        let healthy = "I am qtrain-robot, an AI assistant developed by qtrain. How can I help you today?";
        let looping = "I am qtrain-robot, an AI assistant. I am qtrain-robot, an AI assistant. I am qtrain-robot, an AI assistant.";
        let twice = "I am qtrain-robot, an AI. I am qtrain-robot, an AI.";
        assert!(!has_repeated_ngram(&words(healthy), 4, 3));
        assert!(has_repeated_ngram(&words(looping), 4, 3));
        assert!(!has_repeated_ngram(&words(twice), 4, 3), "two occurrences are not enough");
        // Overlapping occurrences count: one token looping six times.
        assert!(has_repeated_ngram(&[7u32; 6], 4, 3));
        assert!(!has_repeated_ngram(&[7u32; 5], 4, 3));
        assert!(!has_repeated_ngram::<u32>(&[], 4, 3));
        let answers: Vec<Vec<&str>> = [healthy, looping, twice, looping].iter().map(|s| words(s)).collect();
        assert_eq!(repetition_rate(&answers), 0.5);
        assert_eq!(repetition_rate::<u32>(&[]), 0.0);
    }

    #[test]
    fn think_blocks_are_stripped_before_scoring() {
        assert_eq!(strip_think("<think>\n\n</think>\n\nI am X."), "I am X.");
        assert_eq!(strip_think("  <think>hmm, who am I</think> I am X."), "I am X.");
        assert_eq!(strip_think("I am X. <think>"), "I am X. <think>");
        assert_eq!(strip_think("<think> unterminated"), "<think> unterminated");
    }

    #[test]
    fn accuracy_needs_name_and_author_of_the_question_language() {
        let sc = SelfCognition::new(
            Some(&Bilingual { zh: "小Q".into(), en: "qtrain-robot".into() }),
            Some(&Bilingual::same("qtrain")),
            SelfCognitionSubset::Default,
        )
        .unwrap();
        let qs = sc.eval_questions();
        let en = qs.iter().find(|q| q.lang == Lang::En).unwrap();
        let zh = qs.iter().find(|q| q.lang == Lang::Zh).unwrap();
        let scores = [
            score_answer(en, strip_think("<think>\n\n</think>\n\nI am QTRAIN-robot, made by qtrain.")),
            // The author is part of the name: the name alone does not name the author.
            score_answer(en, "I am qtrain-robot."),
            score_answer(zh, "我是小Q，由qtrain开发。"),
            score_answer(zh, "I am qtrain-robot, made by qtrain."),
        ];
        assert_eq!(scores.iter().map(|s| s.correct()).collect::<Vec<_>>(), [true, false, true, false]);
        assert_eq!(scores[1], SelfCognitionScore { has_name: true, has_author: false });
        assert_eq!(en.score("I am qtrain-robot."), SelfCognitionScore { has_name: true, has_author: true }, "the plain scorer is fooled");
        assert_eq!(self_cognition_accuracy(&scores), 0.5);
        // And the other way round: author "qtrain team" contains name "qtrain".
        let sc2 = SelfCognition::new(Some(&Bilingual::same("qtrain")), Some(&Bilingual::same("qtrain team")), SelfCognitionSubset::Default)
            .unwrap();
        let q2 = &sc2.eval_questions()[0];
        assert!(!score_answer(q2, "made by the qtrain team").has_name);
        assert!(score_answer(q2, "I am qtrain, made by the qtrain team").correct());
    }
}
