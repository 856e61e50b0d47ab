//! The bundled self-cognition dataset: ~100 identity questions and answers ("who are you?",
//! "who made you?", "are you ChatGPT?" ...), half Chinese and half English, with `{{NAME}}`
//! and `{{AUTHOR}}` placeholders, in ms-swift's `swift/self-cognition` row shape
//! `{"query", "response", "tag": "zh" | "en"}`. Selected by the dataset spec
//! `self-cognition` (also `self-cognition#N`, `self-cognition:SUBSET`,
//! `swift/self-cognition`); see [`crate::loader`].
//!
//! Substitution follows ms-swift's `SelfCognitionPreprocessor`: `{{NAME}}` and `{{AUTHOR}}`
//! are replaced in query and response by the value for the row's language
//! (`--model_name 小黄 'Xiao Huang'`: zh then en; one value serves both). Unlike ms-swift,
//! which leaves the placeholders in when `--model_name`/`--model_author` are missing, using
//! the dataset without both is an error: training on a literal `{{NAME}}` is never wanted.
//!
//! Subsets, as ms-swift's:
//! * `default`: rows as written.
//! * `empty_think`: responses get the prefix `<think>\n\n</think>\n\n`. For models whose
//!   template emits `<think>` blocks (Qwen3, QwQ): the answer is trained as a reply with
//!   an empty reasoning block, which is how such models answer with thinking off. With
//!   Hugging Face's Qwen3 template the final assistant turn renders identically with or
//!   without the prefix (the template adds an empty block itself and parses a given one
//!   out of the content), so the prefix is harmless there and keeps the rows correct for
//!   templates that do not add it. [`SelfCognitionSubset::for_template`] picks this one
//!   for thinking templates.
//! * `qwen3`: the same prefix, plus ` /no_think` appended to each query (Qwen3's soft
//!   switch), so the model learns the no-thinking answer behind the explicit switch.
//!
//! Held-out questions (`assets/self_cognition_eval.jsonl`, none of them in the training
//! rows) back a "self-cognition accuracy" metric: the share of greedy answers that contain
//! both the configured name and author for the question's language
//! ([`SelfCognitionQuestion::score`], [`self_cognition_accuracy`]).
//!
//! This module only builds rows and checks answers: it must not render, tokenize or
//! generate.

use std::str::FromStr;

use serde_json::{json, Value};

use crate::chat_template::ChatTemplate;
use crate::error::{DataError, Result};

/// The training rows, one JSON object per line (50 zh, then 50 en).
pub const SELF_COGNITION_JSONL: &str = include_str!("../assets/self_cognition.jsonl");
/// Held-out identity questions `{"query", "tag"}` (5 zh, 5 en), not in the training rows.
pub const SELF_COGNITION_EVAL_JSONL: &str = include_str!("../assets/self_cognition_eval.jsonl");
/// The name the bundled dataset goes by in dataset specs and errors.
pub const SELF_COGNITION_DATASET: &str = "self-cognition";

/// What ms-swift puts before each response in the `empty_think` and `qwen3` subsets.
pub const EMPTY_THINK_PREFIX: &str = "<think>\n\n</think>\n\n";
/// What the `qwen3` subset appends to each query.
pub const NO_THINK_SUFFIX: &str = " /no_think";

/// A row's language (`tag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    fn from_tag(tag: &str) -> Option<Lang> {
        match tag {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// A value with a Chinese and an English form (`--model_name 小黄 'Xiao Huang'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bilingual {
    pub zh: String,
    pub en: String,
}

impl Bilingual {
    /// One value for both languages.
    pub fn same(value: impl Into<String>) -> Self {
        let value = value.into();
        Bilingual { zh: value.clone(), en: value }
    }

    /// ms-swift's flag values: one (both languages) or two (zh, en). `option` names the
    /// flag in the error (`model_name`).
    pub fn from_values(option: &str, values: &[impl AsRef<str>]) -> Result<Self> {
        let values: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
        if values.iter().any(|v| v.trim().is_empty()) {
            return Err(DataError::option(option, "values must not be empty"));
        }
        match values.as_slice() {
            [one] => Ok(Bilingual::same(*one)),
            [zh, en] => Ok(Bilingual { zh: zh.to_string(), en: en.to_string() }),
            other => Err(DataError::option(option, format!("takes one value (both languages) or two (zh, en), got {}", other.len()))),
        }
    }

    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Zh => &self.zh,
            Lang::En => &self.en,
        }
    }
}

/// ms-swift's subsets of `self-cognition` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelfCognitionSubset {
    #[default]
    Default,
    /// Responses prefixed with [`EMPTY_THINK_PREFIX`].
    EmptyThink,
    /// [`SelfCognitionSubset::EmptyThink`] plus [`NO_THINK_SUFFIX`] on each query.
    Qwen3,
}

impl SelfCognitionSubset {
    /// `EmptyThink` for templates that emit `<think>` blocks (Qwen3, QwQ), else `Default`:
    /// what ms-swift users pick by hand for Qwen3 models.
    pub fn for_template(template: &ChatTemplate) -> Self {
        if template.source().contains("<think>") {
            SelfCognitionSubset::EmptyThink
        } else {
            SelfCognitionSubset::Default
        }
    }

    /// The subset's name in a dataset spec.
    pub fn name(self) -> &'static str {
        match self {
            SelfCognitionSubset::Default => "default",
            SelfCognitionSubset::EmptyThink => "empty_think",
            SelfCognitionSubset::Qwen3 => "qwen3",
        }
    }

    fn response_prefix(self) -> &'static str {
        match self {
            SelfCognitionSubset::Default => "",
            SelfCognitionSubset::EmptyThink | SelfCognitionSubset::Qwen3 => EMPTY_THINK_PREFIX,
        }
    }

    fn query_suffix(self) -> &'static str {
        match self {
            SelfCognitionSubset::Qwen3 => NO_THINK_SUFFIX,
            SelfCognitionSubset::Default | SelfCognitionSubset::EmptyThink => "",
        }
    }
}

impl FromStr for SelfCognitionSubset {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(SelfCognitionSubset::Default),
            "empty_think" => Ok(SelfCognitionSubset::EmptyThink),
            "qwen3" => Ok(SelfCognitionSubset::Qwen3),
            other => {
                Err(DataError::dataset(format!("{SELF_COGNITION_DATASET}:{other}"), "unknown subset; valid: default, empty_think, qwen3"))
            }
        }
    }
}

/// Everything that turns the bundled rows into training rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCognition {
    pub name: Bilingual,
    pub author: Bilingual,
    pub subset: SelfCognitionSubset,
}

/// One substituted training row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCognitionRow {
    pub query: String,
    pub response: String,
    pub lang: Lang,
}

impl SelfCognitionRow {
    /// `[{"role": "user", "content": query}, {"role": "assistant", "content": response}]`.
    pub fn messages(&self) -> Value {
        json!([{"role": "user", "content": self.query}, {"role": "assistant", "content": self.response}])
    }
}

/// A held-out identity question with what a correct answer must mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCognitionQuestion {
    /// The question, substituted, with the subset's query suffix.
    pub query: String,
    pub lang: Lang,
    /// The configured name and author for the question's language.
    pub expected_name: String,
    pub expected_author: String,
}

/// Whether an answer mentions the configured name and author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfCognitionScore {
    pub has_name: bool,
    pub has_author: bool,
}

impl SelfCognitionScore {
    /// Both mentioned.
    pub fn correct(self) -> bool {
        self.has_name && self.has_author
    }
}

impl SelfCognitionQuestion {
    /// The question as a one-message conversation, to render with a generation prompt.
    pub fn messages(&self) -> Value {
        json!([{"role": "user", "content": self.query}])
    }

    /// Check a (greedy) answer: case-insensitive substring matches of the expected name and
    /// author. A leading `<think>…</think>` block counts as part of the answer; callers that
    /// want only the visible reply strip it first.
    pub fn score(&self, answer: &str) -> SelfCognitionScore {
        let answer = answer.to_lowercase();
        SelfCognitionScore {
            has_name: answer.contains(&self.expected_name.to_lowercase()),
            has_author: answer.contains(&self.expected_author.to_lowercase()),
        }
    }
}

/// Share of correct scores (both name and author mentioned); 0 for no scores.
pub fn self_cognition_accuracy(scores: &[SelfCognitionScore]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().filter(|s| s.correct()).count() as f64 / scores.len() as f64
}

impl SelfCognition {
    /// From the optional `--model_name` / `--model_author` values: both are required.
    pub fn new(name: Option<&Bilingual>, author: Option<&Bilingual>, subset: SelfCognitionSubset) -> Result<Self> {
        let missing = |flag: &str| {
            DataError::dataset(
                SELF_COGNITION_DATASET,
                format!(
                    "needs `{flag}` (one value, or two: zh then en), e.g. `--model_name 小黄 'Xiao Huang' --model_author 魔搭 ModelScope`; \
                     its rows say \"I am {{{{NAME}}}}, developed by {{{{AUTHOR}}}}\""
                ),
            )
        };
        let name = name.ok_or_else(|| missing("model_name"))?.clone();
        let author = author.ok_or_else(|| missing("model_author"))?.clone();
        Ok(SelfCognition { name, author, subset })
    }

    fn substitute(&self, text: &str, lang: Lang) -> String {
        text.replace("{{NAME}}", self.name.get(lang)).replace("{{AUTHOR}}", self.author.get(lang))
    }

    /// Every training row, substituted, in file order (zh rows first).
    pub fn rows(&self) -> Vec<SelfCognitionRow> {
        bundled_rows(SELF_COGNITION_JSONL)
            .into_iter()
            .map(|raw| SelfCognitionRow {
                query: self.substitute(&raw.query, raw.lang) + self.subset.query_suffix(),
                response: format!("{}{}", self.subset.response_prefix(), self.substitute(&raw.response, raw.lang)),
                lang: raw.lang,
            })
            .collect()
    }

    /// The held-out questions, substituted (and suffixed for the `qwen3` subset).
    pub fn eval_questions(&self) -> Vec<SelfCognitionQuestion> {
        bundled_rows(SELF_COGNITION_EVAL_JSONL)
            .into_iter()
            .map(|raw| SelfCognitionQuestion {
                query: self.substitute(&raw.query, raw.lang) + self.subset.query_suffix(),
                lang: raw.lang,
                expected_name: self.name.get(raw.lang).to_string(),
                expected_author: self.author.get(raw.lang).to_string(),
            })
            .collect()
    }
}

struct RawRow {
    query: String,
    response: String,
    lang: Lang,
}

/// Parse a bundled JSONL asset. The assets are compiled in and checked by this module's
/// tests, so a malformed line is a build defect, not a user error.
fn bundled_rows(text: &str) -> Vec<RawRow> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bundled self-cognition row {i}: {e}"));
            let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            RawRow {
                query: field("query").unwrap_or_else(|| panic!("bundled self-cognition row {i}: no query")),
                response: field("response").unwrap_or_default(),
                lang: field("tag").as_deref().and_then(Lang::from_tag).unwrap_or_else(|| panic!("bundled self-cognition row {i}: bad tag")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_template::SpecialTokens;

    fn config(subset: SelfCognitionSubset) -> SelfCognition {
        SelfCognition {
            name: Bilingual::from_values("model_name", &["小黄", "Xiao Huang"]).unwrap(),
            author: Bilingual::from_values("model_author", &["魔搭"]).unwrap(),
            subset,
        }
    }

    #[test]
    fn bundled_assets_are_well_formed_and_balanced() {
        let rows = bundled_rows(SELF_COGNITION_JSONL);
        let zh = rows.iter().filter(|r| r.lang == Lang::Zh).count();
        let en = rows.iter().filter(|r| r.lang == Lang::En).count();
        assert_eq!((zh, en), (50, 50));
        for r in &rows {
            assert!(r.response.contains("{{NAME}}") && r.response.contains("{{AUTHOR}}"), "{}", r.response);
        }
        let mut queries: Vec<&str> = rows.iter().map(|r| r.query.as_str()).collect();
        queries.sort_unstable();
        queries.dedup();
        assert_eq!(queries.len(), 100, "duplicate training queries");
        let eval = bundled_rows(SELF_COGNITION_EVAL_JSONL);
        assert_eq!(eval.len(), 10);
        assert_eq!(eval.iter().filter(|r| r.lang == Lang::Zh).count(), 5);
        for q in &eval {
            assert!(!queries.contains(&q.query.as_str()), "held-out question {:?} is a training row", q.query);
        }
    }

    #[test]
    fn substitutes_by_language_two_values_or_one() {
        let rows = config(SelfCognitionSubset::Default).rows();
        let zh = rows.iter().find(|r| r.lang == Lang::Zh && r.query == "你是{{NAME}}吗？".replace("{{NAME}}", "小黄")).unwrap();
        assert_eq!(zh.response, "是的，我是小黄，一个由魔搭开发的人工智能助手。");
        let en = rows.iter().find(|r| r.query == "Are you Xiao Huang?").unwrap();
        assert_eq!(en.response, "Yes, I am Xiao Huang, an AI assistant developed by 魔搭.");
        assert!(rows.iter().all(|r| !r.query.contains("{{") && !r.response.contains("{{")));
        assert_eq!(
            rows[0].messages(),
            json!([{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": rows[0].response}])
        );
    }

    #[test]
    fn think_subsets_prefix_responses_and_suffix_queries() {
        let empty = config(SelfCognitionSubset::EmptyThink).rows();
        assert_eq!(empty[0].query, "你是谁？");
        assert_eq!(empty[0].response, "<think>\n\n</think>\n\n我是小黄，一个由魔搭开发的人工智能助手。有什么可以帮你的吗？");
        let qwen3 = config(SelfCognitionSubset::Qwen3).rows();
        assert_eq!(qwen3[0].query, "你是谁？ /no_think");
        assert_eq!(qwen3[0].response, empty[0].response);
        assert!(config(SelfCognitionSubset::Qwen3).eval_questions().iter().all(|q| q.query.ends_with(" /no_think")));
    }

    #[test]
    fn subset_follows_the_template() {
        let plain = ChatTemplate::new("{{ messages }}", SpecialTokens::default()).unwrap();
        assert_eq!(SelfCognitionSubset::for_template(&plain), SelfCognitionSubset::Default);
        let thinking = ChatTemplate::new("{{ '<think>\\n\\n</think>\\n\\n' }}", SpecialTokens::default()).unwrap();
        assert_eq!(SelfCognitionSubset::for_template(&thinking), SelfCognitionSubset::EmptyThink);
        assert_eq!("qwen3".parse::<SelfCognitionSubset>().unwrap(), SelfCognitionSubset::Qwen3);
        let err = "nothink".parse::<SelfCognitionSubset>().unwrap_err();
        assert_eq!(err.to_string(), "dataset `self-cognition:nothink`: unknown subset; valid: default, empty_think, qwen3");
    }

    #[test]
    fn eval_questions_and_scoring() {
        let questions = config(SelfCognitionSubset::Default).eval_questions();
        assert_eq!(questions.len(), 10);
        let en = questions.iter().find(|q| q.lang == Lang::En).unwrap();
        assert_eq!((en.expected_name.as_str(), en.expected_author.as_str()), ("Xiao Huang", "魔搭"));
        assert_eq!(en.messages(), json!([{"role": "user", "content": en.query}]));
        let zh = questions.iter().find(|q| q.lang == Lang::Zh).unwrap();
        assert_eq!(zh.expected_name, "小黄");
        let good = en.score("I'm xiao huang, made by 魔搭.");
        let half = en.score("I'm Xiao Huang.");
        let none = zh.score("I'm Xiao Huang, made by 魔搭.");
        assert_eq!(good, SelfCognitionScore { has_name: true, has_author: true });
        assert_eq!(half, SelfCognitionScore { has_name: true, has_author: false });
        assert_eq!(none, SelfCognitionScore { has_name: false, has_author: true });
        assert_eq!(self_cognition_accuracy(&[good, half, none, good]), 0.5);
        assert_eq!(self_cognition_accuracy(&[]), 0.0);
    }

    #[test]
    fn name_and_author_are_required_and_take_one_or_two_values() {
        let name = Bilingual::same("Q");
        let err = SelfCognition::new(Some(&name), None, SelfCognitionSubset::Default).unwrap_err();
        assert!(err.to_string().starts_with("dataset `self-cognition`: needs `model_author`"), "{err}");
        let err = Bilingual::from_values("model_name", &["a", "b", "c"]).unwrap_err();
        assert_eq!(err.to_string(), "`model_name`: takes one value (both languages) or two (zh, en), got 3");
        assert!(Bilingual::from_values("model_name", &[" "]).is_err());
        let none: [&str; 0] = [];
        assert!(Bilingual::from_values("model_name", &none).is_err());
    }
}
