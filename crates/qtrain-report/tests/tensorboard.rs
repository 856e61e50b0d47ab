//! TensorBoard event files: a small reader parses the TFRecords back, checks both CRCs of
//! every record and decodes the Event messages, so a write/read round trip checks framing,
//! checksums and protobuf encoding together.

use std::path::Path;

use qtrain_report::crc32c::masked_crc32c;
use qtrain_report::EventWriter;

/// One decoded `tensorflow.Event`, only the fields this crate writes.
#[derive(Debug, Default, PartialEq)]
struct Event {
    wall_time: f64,
    step: i64,
    file_version: Option<String>,
    /// `(tag, simple_value)` of each `Summary.Value`.
    values: Vec<(String, f32)>,
}

/// Splits a file into TFRecord payloads, checking both masked CRCs of each record.
fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len_bytes = &bytes[pos..pos + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        assert_eq!(len_crc, masked_crc32c(len_bytes), "length CRC of record {}", records.len());
        let data = &bytes[pos + 12..pos + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[pos + 12 + len..pos + 16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked_crc32c(data), "data CRC of record {}", records.len());
        records.push(data.to_vec());
        pos += 16 + len;
    }
    assert_eq!(pos, bytes.len(), "trailing bytes");
    records
}

/// A protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
        assert!(shift < 70, "varint too long");
    }
}

fn read_fields(buf: &[u8]) -> Vec<(u32, Field<'_>)> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos);
        let (number, wire) = ((key >> 3) as u32, key & 7);
        let field = match wire {
            0 => Field::Varint(read_varint(buf, &mut pos)),
            1 => {
                pos += 8;
                Field::Fixed64(buf[pos - 8..pos].try_into().unwrap())
            }
            2 => {
                let len = read_varint(buf, &mut pos) as usize;
                pos += len;
                Field::Bytes(&buf[pos - len..pos])
            }
            5 => {
                pos += 4;
                Field::Fixed32(buf[pos - 4..pos].try_into().unwrap())
            }
            other => panic!("unexpected wire type {other} for field {number}"),
        };
        fields.push((number, field));
    }
    fields
}

fn parse_event(buf: &[u8]) -> Event {
    let mut event = Event::default();
    for (number, field) in read_fields(buf) {
        match (number, field) {
            (1, Field::Fixed64(b)) => event.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => event.step = v as i64,
            (3, Field::Bytes(b)) => event.file_version = Some(String::from_utf8(b.to_vec()).unwrap()),
            (5, Field::Bytes(summary)) => {
                for (n, value) in read_fields(summary) {
                    let (1, Field::Bytes(value)) = (n, value) else { panic!("Summary field {n}") };
                    let (mut tag, mut simple) = (String::new(), f32::NAN);
                    for (n, f) in read_fields(value) {
                        match (n, f) {
                            (1, Field::Bytes(b)) => tag = String::from_utf8(b.to_vec()).unwrap(),
                            (2, Field::Fixed32(b)) => simple = f32::from_le_bytes(b),
                            (n, _) => panic!("unexpected Summary.Value field {n}"),
                        }
                    }
                    event.values.push((tag, simple));
                }
            }
            (n, _) => panic!("unexpected Event field {n}"),
        }
    }
    event
}

fn read_events(path: &Path) -> Vec<Event> {
    read_records(&std::fs::read(path).unwrap()).iter().map(|r| parse_event(r)).collect()
}

#[test]
fn round_trip_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut writer = EventWriter::create(&runs).unwrap();
    let path = writer.path().to_path_buf();
    assert_eq!(path.parent().unwrap(), runs);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    assert_eq!(&parts[..3], ["events", "out", "tfevents"], "{name}");
    let file_time: u64 = parts[3].parse().unwrap_or_else(|_| panic!("unix time in {name}"));
    assert!(file_time > 1_600_000_000, "{name}");
    assert!(!parts[4].is_empty(), "host name in {name}");

    let logged: Vec<(&str, i64, f64, f64)> = vec![
        ("train/loss", 1, 2.5, 1_700_000_000.25),
        ("train/learning_rate", 1, 1e-4, 1_700_000_000.25),
        ("train/loss", 2, 2.25, 1_700_000_001.5),
        ("eval/loss", 2, 2.375, 1_700_000_002.0),
        ("train/loss", 300_000, 0.125, 1_700_000_003.0),
        ("negative/step", -5, -1.0, 0.0),
        ("nan", 7, f64::NAN, 1.0),
        ("inf", 8, f64::INFINITY, 1.0),
        ("unicode/损失", 9, 0.5, 1.0),
        ("", 0, 0.0, 0.0),
    ];
    for &(tag, step, value, wall_time) in &logged {
        writer.add_scalar(tag, step, value, wall_time).unwrap();
    }
    writer.flush().unwrap();

    let events = read_events(&path);
    assert_eq!(events.len(), logged.len() + 1);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!(events[0].values.is_empty());
    assert!((events[0].wall_time - file_time as f64).abs() < 2.0);
    for (event, &(tag, step, value, wall_time)) in events[1..].iter().zip(&logged) {
        assert_eq!(event.file_version, None);
        assert_eq!(event.step, step);
        assert_eq!(event.wall_time, wall_time);
        assert_eq!(event.values.len(), 1);
        assert_eq!(event.values[0].0, tag);
        let got = event.values[0].1;
        let want = value as f32;
        assert!(got == want || (got.is_nan() && want.is_nan()), "{tag}: {got} vs {want}");
    }
}

#[test]
fn flush_makes_records_visible_and_appending_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = EventWriter::create(dir.path()).unwrap();
    // The file_version record is on disk as soon as the writer exists.
    assert_eq!(read_events(writer.path()).len(), 1);
    writer.add_scalar("a", 1, 1.0, 1.0).unwrap();
    writer.flush().unwrap();
    assert_eq!(read_events(writer.path()).len(), 2);
    writer.add_scalar("a", 2, 2.0, 2.0).unwrap();
    let path = writer.path().to_path_buf();
    drop(writer);
    let events = read_events(&path);
    assert_eq!(events.len(), 3, "drop flushes");
    assert_eq!(events[2].values, vec![("a".to_string(), 2.0)]);
}

#[test]
fn writers_in_the_same_second_get_distinct_files() {
    let dir = tempfile::tempdir().unwrap();
    let writers: Vec<EventWriter> = (0..3).map(|_| EventWriter::create(dir.path()).unwrap()).collect();
    let mut paths: Vec<_> = writers.iter().map(|w| w.path().to_path_buf()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 3);
    for p in &paths {
        assert!(p.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
        assert_eq!(read_events(p).len(), 1);
    }
}

#[test]
fn unwritable_dir_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("runs");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let err = EventWriter::create(&blocker).err().expect("a file where the folder should be");
    assert!(matches!(err, qtrain_report::ReportError::Io { .. }), "{err}");
    assert!(err.to_string().contains("runs"), "{err}");
}
