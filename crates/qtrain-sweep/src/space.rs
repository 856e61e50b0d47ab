//! The search space: `NAME=KIND:ARGS` strings, their parsed [`Distribution`]s, and the
//! [`ParamValue`]s a sampler draws from them.
//!
//! | form                          | values                      | example                                   |
//! |-------------------------------|-----------------------------|-------------------------------------------|
//! | `NAME=uniform:LOW:HIGH`       | float in [LOW, HIGH]        | `warmup_ratio=uniform:0.05:0.2`           |
//! | `NAME=loguniform:LOW:HIGH`    | float, uniform in log space | `learning_rate=loguniform:1e-5:5e-4`      |
//! | `NAME=int:LOW:HIGH[:log]`     | integer in [LOW, HIGH]      | `num_train_epochs=int:3:15`               |
//! | `NAME=choice:A,B,...`         | one of the listed values    | `lr_scheduler_type=choice:cosine,linear`  |
//!
//! Choice items are parsed as an integer, then a float, then `true`/`false`, else kept as a
//! string, so `lora_rank=choice:8,16,32` gives JSON/TOML integers and `choice:cosine,linear`
//! strings. Samplers work on an *internal* coordinate per dimension (see
//! [`Distribution::to_internal`]): the value itself, its logarithm for log-scaled dimensions, or
//! the index of a choice.

use std::fmt;
use std::str::FromStr;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SweepError};

/// The forms a search-space string may take; quoted in every parse error.
pub const VALID_FORMS: &str =
    "NAME=uniform:LOW:HIGH, NAME=loguniform:LOW:HIGH (0 < LOW), NAME=int:LOW:HIGH or NAME=int:LOW:HIGH:log, NAME=choice:A,B,... (numbers, true/false or strings)";

/// One parameter value. Serialised untagged, so JSON and TOML see plain numbers, booleans and
/// strings; an integer stays an integer (`16`) and a float stays a float (`16.0`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl ParamValue {
    /// The numeric value of an integer or float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            ParamValue::Int(i) => Some(i as f64),
            ParamValue::Float(x) => Some(x),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            ParamValue::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Bool(b) => serde_json::Value::Bool(*b),
            ParamValue::Int(i) => serde_json::Value::from(*i),
            ParamValue::Float(x) => serde_json::Value::from(*x),
            ParamValue::Str(s) => serde_json::Value::String(s.clone()),
        }
    }

    pub fn to_toml(&self) -> toml::Value {
        match self {
            ParamValue::Bool(b) => toml::Value::Boolean(*b),
            ParamValue::Int(i) => toml::Value::Integer(*i),
            ParamValue::Float(x) => toml::Value::Float(*x),
            ParamValue::Str(s) => toml::Value::String(s.clone()),
        }
    }

    /// A choice item: integer, else finite float, else boolean, else string.
    fn parse_choice(item: &str) -> ParamValue {
        if let Ok(i) = item.parse::<i64>() {
            return ParamValue::Int(i);
        }
        if let Ok(x) = item.parse::<f64>() {
            if x.is_finite() {
                return ParamValue::Float(x);
            }
        }
        match item {
            "true" => ParamValue::Bool(true),
            "false" => ParamValue::Bool(false),
            _ => ParamValue::Str(item.to_string()),
        }
    }
}

/// Displays in the form a choice list accepts back: floats keep a `.` or an exponent
/// (`2.0`, `1e-5`) so that they re-parse as floats.
impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x:?}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// The values of one trial, in search-space order. Serialised as a JSON object
/// (`{"learning_rate": 0.0001, "lora_rank": 16}`); the order is kept both ways.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(Vec<(String, ParamValue)>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// Appends `name`; replaces the value if `name` is already present.
    pub fn insert(&mut self, name: impl Into<String>, value: ParamValue) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of parameter values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Params, A::Error> {
                let mut params = Params::new();
                while let Some((name, value)) = map.next_entry::<String, ParamValue>()? {
                    params.insert(name, value);
                }
                Ok(params)
            }
        }
        deserializer.deserialize_map(ParamsVisitor)
    }
}

/// What one dimension of the search space draws from.
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// A float uniform in `[low, high]`.
    Uniform { low: f64, high: f64 },
    /// A float whose logarithm is uniform in `[ln low, ln high]`; `0 < low`.
    LogUniform { low: f64, high: f64 },
    /// An integer in `[low, high]`; with `log`, its logarithm is (about) uniform and `1 <= low`.
    Int { low: i64, high: i64, log: bool },
    /// One of the listed values, unordered (a categorical dimension).
    Choice { choices: Vec<ParamValue> },
}

impl Distribution {
    /// The sampler coordinate of a value: the value (uniform, linear int), its natural logarithm
    /// (log-uniform, log int) or its index (choice). `None` when the value does not belong here.
    pub fn to_internal(&self, value: &ParamValue) -> Option<f64> {
        match *self {
            Distribution::Uniform { low, high } => value.as_f64().filter(|x| (low..=high).contains(x)),
            Distribution::LogUniform { low, high } => value.as_f64().filter(|x| (low..=high).contains(x)).map(f64::ln),
            Distribution::Int { low, high, log } => {
                let i = value.as_i64().filter(|i| (low..=high).contains(i))?;
                Some(if log { (i as f64).ln() } else { i as f64 })
            }
            Distribution::Choice { ref choices } => choices.iter().position(|c| c == value).map(|i| i as f64),
        }
    }

    /// The value at a sampler coordinate, rounded and clamped into the dimension.
    pub fn from_internal(&self, x: f64) -> ParamValue {
        match *self {
            Distribution::Uniform { low, high } => ParamValue::Float(x.clamp(low, high)),
            Distribution::LogUniform { low, high } => ParamValue::Float(x.exp().clamp(low, high)),
            Distribution::Int { low, high, log } => {
                let v = if log { x.exp() } else { x };
                ParamValue::Int((v.round() as i64).clamp(low, high))
            }
            Distribution::Choice { ref choices } => choices[(x.round().max(0.0) as usize).min(choices.len() - 1)].clone(),
        }
    }

    /// Whether `value` belongs to this dimension.
    pub fn contains(&self, value: &ParamValue) -> bool {
        self.to_internal(value).is_some()
    }

    fn parse(kind: &str, args: &str) -> std::result::Result<Distribution, String> {
        let parts: Vec<&str> = args.split(':').map(str::trim).collect();
        let float = |s: &str, what: &str| -> std::result::Result<f64, String> {
            s.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| format!("{what} {s:?} is not a finite number"))
        };
        let int = |s: &str, what: &str| -> std::result::Result<i64, String> {
            s.parse::<i64>().map_err(|_| format!("{what} {s:?} is not an integer"))
        };
        match kind {
            "uniform" | "loguniform" => {
                let [low, high] = parts[..] else {
                    return Err(format!("{kind} takes exactly LOW:HIGH, got {} field(s)", parts.len()));
                };
                let (low, high) = (float(low, "LOW")?, float(high, "HIGH")?);
                if low >= high {
                    return Err(format!("LOW ({low}) must be below HIGH ({high})"));
                }
                if kind == "uniform" {
                    Ok(Distribution::Uniform { low, high })
                } else if low <= 0.0 {
                    Err(format!("loguniform needs 0 < LOW, got {low}"))
                } else {
                    Ok(Distribution::LogUniform { low, high })
                }
            }
            "int" => {
                let (low, high, log) = match parts[..] {
                    [low, high] => (low, high, false),
                    [low, high, "log"] => (low, high, true),
                    [_, _, other] => return Err(format!("the optional third field of int must be `log`, got {other:?}")),
                    _ => return Err(format!("int takes LOW:HIGH or LOW:HIGH:log, got {} field(s)", parts.len())),
                };
                let (low, high) = (int(low, "LOW")?, int(high, "HIGH")?);
                if low >= high {
                    return Err(format!("LOW ({low}) must be below HIGH ({high})"));
                }
                if log && low < 1 {
                    return Err(format!("int:...:log needs 1 <= LOW, got {low}"));
                }
                Ok(Distribution::Int { low, high, log })
            }
            "choice" => {
                let items: Vec<&str> = args.split(',').map(str::trim).collect();
                if let Some(i) = items.iter().position(|s| s.is_empty()) {
                    return Err(format!("choice item {} is empty", i + 1));
                }
                let choices: Vec<ParamValue> = items.iter().map(|s| ParamValue::parse_choice(s)).collect();
                for (i, c) in choices.iter().enumerate() {
                    if choices[..i].contains(c) {
                        return Err(format!("choice {c} is listed twice"));
                    }
                }
                Ok(Distribution::Choice { choices })
            }
            other => Err(format!("unknown kind {other:?}")),
        }
    }
}

/// Displays as the `KIND:ARGS` part of a search-space string, which parses back to `self`.
impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform { low, high } => write!(f, "uniform:{low:?}:{high:?}"),
            Distribution::LogUniform { low, high } => write!(f, "loguniform:{low:?}:{high:?}"),
            Distribution::Int { low, high, log } => write!(f, "int:{low}:{high}{}", if *log { ":log" } else { "" }),
            Distribution::Choice { choices } => {
                f.write_str("choice:")?;
                for (i, c) in choices.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
        }
    }
}

/// One named dimension, parsed from `NAME=KIND:ARGS`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub distribution: Distribution,
}

impl FromStr for Param {
    type Err = SweepError;
    fn from_str(spec: &str) -> Result<Param> {
        let err = |message: String| SweepError::Parse { spec: spec.to_string(), message };
        let (name, rest) = spec.split_once('=').ok_or_else(|| err("missing `=` between NAME and KIND".into()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(err("NAME is empty".into()));
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Err(err(format!("NAME {name:?} contains {c:?}; use letters, digits, `_`, `-` or `.`")));
        }
        let (kind, args) = rest.split_once(':').ok_or_else(|| err("missing `:` after KIND".into()))?;
        let distribution = Distribution::parse(kind.trim(), args.trim()).map_err(err)?;
        Ok(Param { name: name.to_string(), distribution })
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.distribution)
    }
}

/// The dimensions of a study, in the order given. Serialised as the list of canonical
/// search-space strings (`["learning_rate=loguniform:1e-5:0.0005", ...]`).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpace {
    params: Vec<Param>,
}

impl SearchSpace {
    /// Parses every string; the first bad one is the error. Names must be unique and at least
    /// one dimension is required.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<SearchSpace> {
        let mut params: Vec<Param> = Vec::with_capacity(specs.len());
        for spec in specs {
            let param: Param = spec.as_ref().parse()?;
            if params.iter().any(|p| p.name == param.name) {
                return Err(SweepError::Parse {
                    spec: spec.as_ref().to_string(),
                    message: format!("parameter {:?} is given twice", param.name),
                });
            }
            params.push(param);
        }
        if params.is_empty() {
            return Err(SweepError::InvalidConfig { message: format!("the search space is empty; give at least one of {VALID_FORMS}") });
        }
        Ok(SearchSpace { params })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The canonical strings, which [`SearchSpace::parse`] turns back into `self`.
    pub fn specs(&self) -> Vec<String> {
        self.params.iter().map(Param::to_string).collect()
    }

    /// Checks that `params` has exactly this space's names, each with a value it can take.
    pub fn check(&self, params: &Params) -> std::result::Result<(), String> {
        for p in &self.params {
            match params.get(&p.name) {
                None => return Err(format!("parameter {:?} is missing", p.name)),
                Some(v) if !p.distribution.contains(v) => {
                    return Err(format!("parameter {:?} = {v} is outside {}", p.name, p.distribution))
                }
                Some(_) => {}
            }
        }
        if let Some((extra, _)) = params.iter().find(|(n, _)| !self.params.iter().any(|p| p.name == *n)) {
            return Err(format!("parameter {extra:?} is not in the search space"));
        }
        Ok(())
    }
}

impl Serialize for SearchSpace {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.specs().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SearchSpace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let specs = Vec::<String>::deserialize(deserializer)?;
        SearchSpace::parse(&specs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(spec: &str) -> String {
        SearchSpace::parse(&[spec]).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_form_of_the_brief() {
        let space = SearchSpace::parse(&[
            "learning_rate=loguniform:1e-5:5e-4",
            "num_train_epochs=int:3:15",
            "lora_alpha=int:8:64:log",
            "warmup_ratio=uniform:0.05:0.2",
            "lora_rank=choice:8,16,32",
            "lr_scheduler_type=choice:cosine, linear",
            "use_rslora=choice:true,false",
            "lora_dropout=choice:0,0.05,0.1",
        ])
        .unwrap();
        let d: Vec<&Distribution> = space.params().iter().map(|p| &p.distribution).collect();
        assert_eq!(*d[0], Distribution::LogUniform { low: 1e-5, high: 5e-4 });
        assert_eq!(*d[1], Distribution::Int { low: 3, high: 15, log: false });
        assert_eq!(*d[2], Distribution::Int { low: 8, high: 64, log: true });
        assert_eq!(*d[3], Distribution::Uniform { low: 0.05, high: 0.2 });
        assert_eq!(*d[4], Distribution::Choice { choices: vec![ParamValue::Int(8), ParamValue::Int(16), ParamValue::Int(32)] });
        assert_eq!(*d[5], Distribution::Choice { choices: vec![ParamValue::Str("cosine".into()), ParamValue::Str("linear".into())] });
        assert_eq!(*d[6], Distribution::Choice { choices: vec![ParamValue::Bool(true), ParamValue::Bool(false)] });
        assert_eq!(*d[7], Distribution::Choice { choices: vec![ParamValue::Int(0), ParamValue::Float(0.05), ParamValue::Float(0.1)] });
        // Canonical strings parse back to the same space, and serde goes through them.
        assert_eq!(SearchSpace::parse(&space.specs()).unwrap(), space);
        let json = serde_json::to_string(&space).unwrap();
        assert_eq!(serde_json::from_str::<SearchSpace>(&json).unwrap(), space);
    }

    #[test]
    fn parse_errors_name_the_string_and_the_valid_forms() {
        for (spec, needle) in [
            ("learning_rate", "missing `=`"),
            ("=uniform:0:1", "NAME is empty"),
            ("lr=loguniform", "missing `:`"),
            ("lr=gaussian:0:1", "unknown kind \"gaussian\""),
            ("lr=loguniform:0:1e-3", "0 < LOW"),
            ("lr=loguniform:1e-3:1e-5", "must be below HIGH"),
            ("lr=uniform:a:1", "LOW \"a\" is not a finite number"),
            ("lr=uniform:0:1:2", "exactly LOW:HIGH"),
            ("epochs=int:3.5:15", "is not an integer"),
            ("epochs=int:3:15:lin", "must be `log`"),
            ("epochs=int:0:15:log", "1 <= LOW"),
            ("rank=choice:8,,32", "item 2 is empty"),
            ("rank=choice:8,8", "listed twice"),
            ("lr rate=uniform:0:1", "contains ' '"),
        ] {
            let msg = parse_err(spec);
            assert!(msg.contains(&format!("{spec:?}")), "{msg}");
            assert!(msg.contains(needle), "{spec}: {msg}");
            assert!(msg.contains(VALID_FORMS), "{msg}");
        }
        let dup = SearchSpace::parse(&["a=uniform:0:1", "a=int:1:2"]).unwrap_err().to_string();
        assert!(dup.contains("given twice"), "{dup}");
        let empty: [&str; 0] = [];
        assert!(SearchSpace::parse(&empty).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn values_serialise_as_plain_json_and_round_trip() {
        let mut p = Params::new();
        p.insert("learning_rate", ParamValue::Float(1e-4));
        p.insert("lora_rank", ParamValue::Int(16));
        p.insert("lr_scheduler_type", ParamValue::Str("cosine".into()));
        p.insert("num_train_epochs", ParamValue::Float(3.0));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"learning_rate":0.0001,"lora_rank":16,"lr_scheduler_type":"cosine","num_train_epochs":3.0}"#);
        assert_eq!(serde_json::from_str::<Params>(&json).unwrap(), p);
    }

    #[test]
    fn internal_coordinates_round_trip() {
        let space = SearchSpace::parse(&["a=loguniform:1e-5:1e-3", "b=int:1:100:log", "c=choice:x,y", "d=int:3:15"]).unwrap();
        let values = [ParamValue::Float(2e-4), ParamValue::Int(37), ParamValue::Str("y".into()), ParamValue::Int(7)];
        for (p, v) in space.params().iter().zip(&values) {
            let x = p.distribution.to_internal(v).unwrap();
            match (p.distribution.from_internal(x), v) {
                // exp(ln(v)) may differ from v in the last bit.
                (ParamValue::Float(a), ParamValue::Float(b)) => assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}"),
                (back, v) => assert_eq!(back, *v, "{}", p.name),
            }
        }
        assert_eq!(space.params()[0].distribution.to_internal(&ParamValue::Float(1.0)), None);
        assert_eq!(space.params()[3].distribution.to_internal(&ParamValue::Float(7.0)), None);
    }
}
