//! TensorBoard scalar event files, written by hand (no TensorFlow, no protobuf compiler).
//!
//! A file is a sequence of TFRecords, each framing one serialised `tensorflow.Event`:
//!
//! ```text
//! u64 LE  length of data
//! u32 LE  masked CRC-32C of the 8 length bytes
//! [u8]    data (one Event message)
//! u32 LE  masked CRC-32C of data
//! ```
//!
//! The messages used, from `tensorflow/core/util/event.proto` and `summary.proto`:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! The first record is `Event { wall_time, file_version: "brain.Event:2" }`, which is how
//! readers recognise the format. TensorBoard finds files by the `tfevents` in their name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::crc32c::masked_crc32c;
use crate::error::{ReportError, Result};

/// The `file_version` string of the first record of every event file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Seconds since the Unix epoch, with sub-second precision: the `wall_time` TensorBoard expects.
pub fn unix_time_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Appends scalar summaries to one `events.out.tfevents.<unix_time>.<hostname>` file.
///
/// Records are buffered; call [`EventWriter::flush`] after each logging step so that a running
/// TensorBoard sees them. Dropping the writer flushes too, but silently ignores errors.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// Scratch buffer reused for each serialised Event.
    scratch: Vec<u8>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file inside it, and writes the `file_version`
    /// record. An existing file is never overwritten: when two writers start in the same
    /// second on the same host, the later one gets a `.1`, `.2`, … suffix.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;
        let wall_time = unix_time_now();
        let base = format!("events.out.tfevents.{}.{}", wall_time as u64, hostname());
        let (path, file) = create_new_numbered(dir, &base)?;
        let mut writer = EventWriter { path, out: BufWriter::new(file), scratch: Vec::with_capacity(128) };
        writer.scratch.clear();
        encode_file_version_event(&mut writer.scratch, wall_time);
        writer.write_scratch_record()?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one scalar. `value` is stored as a 32-bit float (`simple_value` is a proto
    /// `float`); NaN and infinities are written as they are, as TensorBoard accepts them.
    /// `wall_time` is seconds since the Unix epoch, see [`unix_time_now`].
    pub fn add_scalar(&mut self, tag: &str, step: i64, value: f64, wall_time: f64) -> Result<()> {
        self.scratch.clear();
        encode_scalar_event(&mut self.scratch, tag, step, value as f32, wall_time);
        self.write_scratch_record()
    }

    /// Pushes buffered records to the operating system, so that readers see them.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| ReportError::io(&self.path, e))
    }

    fn write_scratch_record(&mut self) -> Result<()> {
        write_record(&mut self.out, &self.scratch).map_err(|e| ReportError::io(&self.path, e))
    }
}

/// Opens `dir/base`, or `dir/base.1`, `dir/base.2`, … , whichever does not exist yet.
fn create_new_numbered(dir: &Path, base: &str) -> Result<(PathBuf, File)> {
    for n in 0u32.. {
        let name = if n == 0 { base.to_string() } else { format!("{base}.{n}") };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ReportError::io(&path, e)),
        }
    }
    unreachable!("u32 range exhausted while naming an event file")
}

/// The machine's host name, reduced to characters that are safe in a file name.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String =
        raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

/// Writes one TFRecord: length, masked CRC of the length bytes, data, masked CRC of the data.
fn write_record(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc32c(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

// ---- Protobuf encoding -------------------------------------------------------------------
// Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from((field << 3) | wire));
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// `Event { wall_time = 1, file_version = 3 }`.
fn encode_file_version_event(buf: &mut Vec<u8>, wall_time: f64) {
    put_key(buf, 1, WIRE_FIXED64);
    buf.extend_from_slice(&wall_time.to_le_bytes());
    put_bytes(buf, 3, FILE_VERSION.as_bytes());
}

/// `Event { wall_time = 1, step = 2, summary = 5 { value = 1 { tag = 1, simple_value = 2 } } }`.
fn encode_scalar_event(buf: &mut Vec<u8>, tag: &str, step: i64, value: f32, wall_time: f64) {
    let mut summary_value = Vec::with_capacity(tag.len() + 8);
    put_bytes(&mut summary_value, 1, tag.as_bytes());
    put_key(&mut summary_value, 2, WIRE_FIXED32);
    summary_value.extend_from_slice(&value.to_le_bytes());

    let mut summary = Vec::with_capacity(summary_value.len() + 4);
    put_bytes(&mut summary, 1, &summary_value);

    put_key(buf, 1, WIRE_FIXED64);
    buf.extend_from_slice(&wall_time.to_le_bytes());
    // int64 is encoded as the two's complement u64 (negative steps take 10 bytes).
    put_key(buf, 2, WIRE_VARINT);
    put_varint(buf, step as u64);
    put_bytes(buf, 5, &summary);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_protobuf_encoding() {
        let enc = |v: u64| {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7F]);
        assert_eq!(enc(150), [0x96, 0x01]);
        assert_eq!(enc(300), [0xAC, 0x02]);
        assert_eq!(enc(-1i64 as u64), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    }

    /// Bytes checked by hand against event.proto field numbers and wire types.
    #[test]
    fn scalar_event_bytes() {
        let mut buf = Vec::new();
        encode_scalar_event(&mut buf, "a", 3, 1.0, 0.0);
        let mut expected = vec![0x09];
        expected.extend_from_slice(&0.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0x03]); // step = 3
        expected.extend_from_slice(&[0x2A, 0x0A]); // summary, 10 bytes
        expected.extend_from_slice(&[0x0A, 0x08]); // value, 8 bytes
        expected.extend_from_slice(&[0x0A, 0x01, b'a']); // tag = "a"
        expected.push(0x15); // simple_value, fixed32
        expected.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(buf, expected);
    }

    #[test]
    fn record_framing() {
        let mut out = Vec::new();
        write_record(&mut out, b"xyz").unwrap();
        assert_eq!(out.len(), 8 + 4 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(&out[8..12], &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&out[12..15], b"xyz");
        assert_eq!(&out[15..], &masked_crc32c(b"xyz").to_le_bytes());
    }

    #[test]
    fn hostname_is_file_name_safe() {
        let h = hostname();
        assert!(!h.is_empty());
        assert!(h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')), "{h}");
    }
}
