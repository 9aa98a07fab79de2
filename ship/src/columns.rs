//! The Parquet form of entries: the Arrow schema, entries → a record batch → Parquet bytes
//! (the shipper), and Parquet bytes → typed columns again (the fleet verifier, which
//! encodes each row's cells straight into canonical leaf bytes in a reused buffer and
//! compares them with the shipped leaf byte for byte).
//!
//! One row per entry, sorted by seq, typed columns (docs/FLEET.md, "Parquet schema").
//! Every column holds the leaf's value exactly: strings as they are (an empty string stays
//! empty, as protobuf cannot tell it from a missing one), unsigned integers unsigned, the
//! time twice: `time` as a UTC timestamp in microseconds (the unit every engine reads) and
//! `time_unix_nanos` exactly. Compression is zstd level 3: at its default level it makes
//! these files about a third smaller than snappy at a similar decode speed, and the leaves
//! objects use the same codec (docs/FLEET.md, "Sizes").

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ledger_proto::merkle::Hash;
use ledger_proto::pb::{self, Decision, Kind};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;

/// Rows per row group: engines read and skip whole row groups; 128k rows of these
/// entries are a few MB compressed, the size readers handle best.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The zstd level of Parquet pages and leaves objects.
pub const ZSTD_LEVEL: i32 = 3;

/// What went wrong reading or writing a Parquet file.
#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("column {column}: {why}")]
    Column { column: &'static str, why: String },
}

/// The schema of a shipped Parquet file, in column order.
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str| Field::new(name, DataType::Utf8, false);
    let u64f = |name: &str| Field::new(name, DataType::UInt64, false);
    let u32f = |name: &str| Field::new(name, DataType::UInt32, false);
    Arc::new(Schema::new(vec![
        s("log"),
        u64f("seq"),
        Field::new("time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("time_unix_nanos", DataType::Int64, false),
        s("kind"),
        s("agent"),
        s("agent_id"),
        s("session"),
        s("action"),
        s("tool"),
        s("params"),
        s("decision"),
        s("rule"),
        u64f("policy_version"),
        s("reason"),
        u32f("writer_uid"),
        u32f("writer_gid"),
        u32f("writer_pid"),
        s("host"),
        u32f("severity"),
        Field::new("flags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        s("policy_check"),
        s("shim_id"),
        u64f("shim_seq"),
        Field::new("ref_seq", DataType::UInt64, true),
        s("details"),
        Field::new("leaf_hash", DataType::FixedSizeBinary(32), false),
    ]))
});

/// The `time` column's value for an entry time: microseconds, rounded down.
pub fn time_micros(ns: i64) -> i64 {
    ns.div_euclid(1000)
}

/// The record batch of `rows` (entries with their leaf hashes) of the log `origin`, in
/// the given order.
pub fn batch(origin: &str, rows: &[(pb::Entry, Hash)]) -> Result<RecordBatch, ColumnsError> {
    let n = rows.len();
    let mut log = StringBuilder::with_capacity(n, n * origin.len());
    let mut seq = UInt64Builder::with_capacity(n);
    let mut time = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut nanos = Int64Builder::with_capacity(n);
    let mut strings: Vec<StringBuilder> = (0..STRING_COLUMNS.len()).map(|_| StringBuilder::new()).collect();
    let mut policy_version = UInt64Builder::with_capacity(n);
    let mut uid = UInt32Builder::with_capacity(n);
    let mut gid = UInt32Builder::with_capacity(n);
    let mut pid = UInt32Builder::with_capacity(n);
    let mut severity = UInt32Builder::with_capacity(n);
    let mut flags = ListBuilder::new(StringBuilder::new());
    let mut shim_seq = UInt64Builder::with_capacity(n);
    let mut ref_seq = UInt64Builder::with_capacity(n);
    let mut leaf_hash = FixedSizeBinaryBuilder::with_capacity(n, 32);
    for (e, hash) in rows {
        log.append_value(origin);
        seq.append_value(e.seq);
        time.append_value(time_micros(e.time_unix_nanos));
        nanos.append_value(e.time_unix_nanos);
        for (b, (_, get)) in strings.iter_mut().zip(STRING_COLUMNS.iter()) {
            b.append_value(get(e));
        }
        policy_version.append_value(e.policy_version);
        uid.append_value(e.writer_uid);
        gid.append_value(e.writer_gid);
        pid.append_value(e.writer_pid);
        severity.append_value(e.severity);
        for f in &e.flags {
            flags.values().append_value(f);
        }
        flags.append(true);
        shim_seq.append_value(e.shim_seq);
        ref_seq.append_option(e.ref_seq);
        leaf_hash.append_value(hash)?;
    }
    let mut s = strings.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || s.next().ok_or(ColumnsError::Column { column: "?", why: "string columns".into() });
    // The order of SCHEMA; STRING_COLUMNS lists the string columns in that same order.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(log.finish()),
        Arc::new(seq.finish()),
        Arc::new(time.finish()),
        Arc::new(nanos.finish()),
        next()?, // kind
        next()?, // agent
        next()?, // agent_id
        next()?, // session
        next()?, // action
        next()?, // tool
        next()?, // params
        next()?, // decision
        next()?, // rule
        Arc::new(policy_version.finish()),
        next()?, // reason
        Arc::new(uid.finish()),
        Arc::new(gid.finish()),
        Arc::new(pid.finish()),
        next()?, // host
        Arc::new(severity.finish()),
        Arc::new(flags.finish()),
        next()?, // policy_check
        next()?, // shim_id
        Arc::new(shim_seq.finish()),
        Arc::new(ref_seq.finish()),
        next()?, // details
        Arc::new(leaf_hash.finish()),
    ];
    Ok(RecordBatch::try_new(SCHEMA.clone(), columns)?)
}

type Getter = fn(&pb::Entry) -> &str;

/// The string columns in schema order, with how to read each from an entry.
const STRING_COLUMNS: [(&str, Getter); 14] = [
    ("kind", |e| Kind::name_of(e.kind)),
    ("agent", |e| &e.agent),
    ("agent_id", |e| &e.agent_id),
    ("session", |e| &e.session),
    ("action", |e| &e.action),
    ("tool", |e| &e.tool),
    ("params", |e| &e.params),
    ("decision", |e| Decision::name_of(e.decision)),
    ("rule", |e| &e.rule),
    ("reason", |e| &e.reason),
    ("host", |e| &e.host),
    ("policy_check", |e| &e.policy_check),
    ("shim_id", |e| &e.shim_id),
    ("details", |e| &e.details),
];

/// Writes `rows` as one Parquet file (zstd, row groups of [`ROW_GROUP_ROWS`], sorted by
/// seq and saying so in its metadata). The same rows always give the same bytes, so a
/// retried upload of a range is recognised as the same object.
pub fn parquet_bytes(origin: &str, rows: &[(pb::Entry, Hash)]) -> Result<Vec<u8>, ColumnsError> {
    let level = ZstdLevel::try_new(ZSTD_LEVEL)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, SCHEMA.clone(), Some(props))?;
    writer.write(&batch(origin, rows)?)?;
    writer.close()?;
    Ok(out)
}

/// A Parquet row read back: the entry it stands for, its leaf hash, and its `time` column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The `log` column: the checkpoint origin of the log the row was shipped from.
    pub log: String,
    pub entry: pb::Entry,
    pub leaf_hash: Vec<u8>,
    pub time_micros: i64,
}

/// Rows per record batch when reading back: a batch of these rows is a few MB, so the
/// columns being compared stay in cache.
pub const READ_BATCH_ROWS: usize = 8 * 1024;

/// The record batches of a shipped Parquet file, [`READ_BATCH_ROWS`] rows each.
pub fn batches(bytes: bytes::Bytes) -> Result<ParquetRecordBatchReader, ColumnsError> {
    Ok(ParquetRecordBatchReaderBuilder::try_new(bytes)?.with_batch_size(READ_BATCH_ROWS).build()?)
}

/// Reads every row of a shipped Parquet file. A missing column or one of another type is
/// an error naming it; values are taken as they are (the caller compares them).
pub fn read_rows(bytes: bytes::Bytes) -> Result<Vec<Row>, ColumnsError> {
    let mut rows = Vec::new();
    for batch in batches(bytes)? {
        let batch = batch?;
        let cols = Columns::of(&batch)?;
        rows.extend((0..cols.len()).map(|i| cols.row(i)));
    }
    Ok(rows)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a T, ColumnsError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| ColumnsError::Column { column: name, why: "missing".into() })?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| ColumnsError::Column {
        column: name,
        why: format!("has type {}, not the shipped type", col.data_type()),
    })
}

/// The typed columns of one record batch of a shipped file, borrowed: the verifier
/// compares them with the leaves without building an entry per row.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
    /// In the order of STRING_COLUMNS.
    strings: [&'a StringArray; 14],
    log: &'a StringArray,
    seq: &'a UInt64Array,
    time: &'a TimestampMicrosecondArray,
    nanos: &'a Int64Array,
    policy_version: &'a UInt64Array,
    uid: &'a UInt32Array,
    gid: &'a UInt32Array,
    pid: &'a UInt32Array,
    severity: &'a UInt32Array,
    flags: &'a ListArray,
    flag_values: &'a StringArray,
    shim_seq: &'a UInt64Array,
    ref_seq: &'a UInt64Array,
    leaf_hash: &'a FixedSizeBinaryArray,
    /// Whether a column that is never null in a shipped file has a null here (then each
    /// row is checked for one).
    any_null: bool,
}

impl<'a> Columns<'a> {
    /// The columns of `batch`; a missing column or one of another type is an error naming it.
    pub fn of(batch: &'a RecordBatch) -> Result<Columns<'a>, ColumnsError> {
        let mut strings = Vec::with_capacity(STRING_COLUMNS.len());
        for (name, _) in STRING_COLUMNS {
            strings.push(column::<StringArray>(batch, name)?);
        }
        let strings: [&StringArray; 14] = strings
            .try_into()
            .map_err(|_| ColumnsError::Column { column: "?", why: "string columns".into() })?;
        let flags = column::<ListArray>(batch, "flags")?;
        let flag_values = flags
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or(ColumnsError::Column { column: "flags", why: "is not a list of strings".into() })?;
        let any_null = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .any(|(f, c)| f.name() != "ref_seq" && c.null_count() > 0)
            || flag_values.null_count() > 0;
        Ok(Columns {
            batch,
            strings,
            log: column(batch, "log")?,
            seq: column(batch, "seq")?,
            time: column(batch, "time")?,
            nanos: column(batch, "time_unix_nanos")?,
            policy_version: column(batch, "policy_version")?,
            uid: column(batch, "writer_uid")?,
            gid: column(batch, "writer_gid")?,
            pid: column(batch, "writer_pid")?,
            severity: column(batch, "severity")?,
            flags,
            flag_values,
            shim_seq: column(batch, "shim_seq")?,
            ref_seq: column(batch, "ref_seq")?,
            leaf_hash: column(batch, "leaf_hash")?,
            any_null,
        })
    }

    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn seq(&self, i: usize) -> u64 {
        self.seq.value(i)
    }

    pub fn log(&self, i: usize) -> &str {
        self.log.value(i)
    }

    pub fn nanos(&self, i: usize) -> i64 {
        self.nanos.value(i)
    }

    pub fn time_micros(&self, i: usize) -> i64 {
        self.time.value(i)
    }

    pub fn leaf_hash(&self, i: usize) -> &[u8] {
        self.leaf_hash.value(i)
    }

    /// The `kind` column's text.
    pub fn kind(&self, i: usize) -> &str {
        self.strings[0].value(i)
    }

    /// The first column that is null in row `i` though a shipped file never has a null
    /// there (a null reads as an empty string or zero, so it must be caught apart).
    pub fn null_column(&self, i: usize) -> Option<&str> {
        if !self.any_null {
            return None;
        }
        let schema = self.batch.schema_ref();
        for (f, c) in schema.fields().iter().zip(self.batch.columns()) {
            if f.name() != "ref_seq" && c.is_null(i) {
                return Some(f.name());
            }
        }
        let (lo, hi) = self.flag_range(i);
        (lo..hi).any(|j| self.flag_values.is_null(j)).then_some("flags")
    }

    fn flag_range(&self, i: usize) -> (usize, usize) {
        let offsets = self.flags.value_offsets();
        (offsets[i] as usize, offsets[i + 1] as usize)
    }

    fn ref_seq(&self, i: usize) -> Option<u64> {
        (!self.ref_seq.is_null(i)).then(|| self.ref_seq.value(i))
    }

    /// Writes the canonical leaf bytes of row `i`'s entry into `out` (cleared first),
    /// exactly as `ledger_proto::leaf::leaf_bytes` would for the entry the row stands for,
    /// without building that entry. `false` if a `kind` or `decision` name is one no entry
    /// has (the row cannot equal any leaf).
    pub fn leaf_bytes_into(&self, i: usize, out: &mut Vec<u8>) -> bool {
        let s = |k: usize| self.strings[k].value(i);
        let Some(kind) = kind_code(s(0)) else { return false };
        let Some(decision) = decision_code(s(7)) else { return false };
        out.clear();
        // Field numbers and order of `Entry` in ledger.proto; proto3 leaves out a field at
        // its default, except the `optional` ref_seq and each element of `repeated` flags.
        let mut w = Proto(out);
        w.uint(1, self.seq.value(i));
        w.uint(2, self.nanos.value(i) as u64);
        w.uint(3, kind as u64);
        w.text(4, s(1));
        w.text(5, s(2));
        w.text(6, s(3));
        w.text(7, s(4));
        w.text(8, s(5));
        w.text(9, s(6));
        w.uint(10, decision as u64);
        w.text(11, s(8));
        w.uint(12, self.policy_version.value(i));
        w.text(13, s(9));
        w.uint(14, u64::from(self.uid.value(i)));
        w.uint(15, u64::from(self.gid.value(i)));
        w.uint(16, u64::from(self.pid.value(i)));
        w.text(17, s(10));
        w.uint(18, u64::from(self.severity.value(i)));
        let (lo, hi) = self.flag_range(i);
        for j in lo..hi {
            w.bytes(19, self.flag_values.value(j).as_bytes());
        }
        w.text(20, s(11));
        w.text(21, s(12));
        w.uint(22, self.shim_seq.value(i));
        if let Some(r) = self.ref_seq(i) {
            w.key(23, 0);
            w.varint(r);
        }
        w.text(24, s(13));
        true
    }

    /// Row `i` as an entry (for messages and the rare rows the verifier needs whole).
    pub fn row(&self, i: usize) -> Row {
        let text = |k: usize| self.strings[k].value(i).to_string();
        let (lo, hi) = self.flag_range(i);
        let entry = pb::Entry {
            seq: self.seq.value(i),
            time_unix_nanos: self.nanos.value(i),
            // A name this version does not know cannot re-encode to the leaf: the
            // comparison reports the row.
            kind: kind_code(self.strings[0].value(i)).unwrap_or(-1),
            agent: text(1),
            agent_id: text(2),
            session: text(3),
            action: text(4),
            tool: text(5),
            params: text(6),
            decision: decision_code(self.strings[7].value(i)).unwrap_or(-1),
            rule: text(8),
            policy_version: self.policy_version.value(i),
            reason: text(9),
            writer_uid: self.uid.value(i),
            writer_gid: self.gid.value(i),
            writer_pid: self.pid.value(i),
            host: text(10),
            severity: self.severity.value(i),
            flags: (lo..hi).map(|j| self.flag_values.value(j).to_string()).collect(),
            policy_check: text(11),
            shim_id: text(12),
            shim_seq: self.shim_seq.value(i),
            ref_seq: self.ref_seq(i),
            details: text(13),
        };
        Row {
            log: self.log.value(i).to_string(),
            entry,
            leaf_hash: self.leaf_hash.value(i).to_vec(),
            time_micros: self.time.value(i),
        }
    }
}

/// The raw `kind` of a `kind` column's text; `None` for a name no kind has.
fn kind_code(name: &str) -> Option<i32> {
    Kind::from_name(name).map(|k| k as i32)
}

/// The raw `decision` of a `decision` column's text; `None` for a name no decision has.
fn decision_code(name: &str) -> Option<i32> {
    match name {
        "" => Some(Decision::Unspecified as i32),
        "allow" => Some(Decision::Allow as i32),
        "deny" => Some(Decision::Deny as i32),
        _ => None,
    }
}

/// A protobuf writer with prost's encoding of proto3 scalars (varints, length-delimited
/// strings, defaults left out).
struct Proto<'a>(&'a mut Vec<u8>);

impl Proto<'_> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn text(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> pb::Entry {
        pb::Entry {
            seq,
            time_unix_nanos: 1_764_221_976_123_456_789 + seq as i64,
            kind: Kind::Decision as i32,
            agent: "billing-bot".into(),
            tool: "payments.refund".into(),
            params: r#"{"amount":12}"#.into(),
            decision: Decision::Deny as i32,
            flags: vec!["deny_burst".into(), "first_use".into()],
            ref_seq: seq.is_multiple_of(2).then_some(seq),
            shim_seq: u64::MAX,
            writer_uid: u32::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn rows_read_back_re_encode_to_their_leaves() {
        let rows: Vec<(pb::Entry, Hash)> =
            (0..300).map(|s| (entry(s), ledger_proto::leaf::entry_leaf_hash(&entry(s)))).collect();
        let bytes = parquet_bytes("web-1/ledgerd/0a1b2c3d", &rows).expect("write");
        assert_eq!(
            bytes,
            parquet_bytes("web-1/ledgerd/0a1b2c3d", &rows).expect("write again"),
            "the same rows give the same bytes"
        );
        let back = read_rows(bytes.into()).expect("read");
        assert_eq!(back.len(), rows.len());
        for ((e, h), row) in rows.iter().zip(&back) {
            assert_eq!(&row.entry, e);
            assert_eq!(row.log, "web-1/ledgerd/0a1b2c3d");
            assert_eq!(ledger_proto::leaf::leaf_bytes(&row.entry), ledger_proto::leaf::leaf_bytes(e));
            assert_eq!(row.leaf_hash, h.to_vec());
            assert_eq!(row.time_micros, time_micros(e.time_unix_nanos));
        }
    }

    /// Entries that differ from each other in every field, with the edge values of each
    /// (empty and multi-byte strings, zero and maximal integers, negative times, an empty
    /// flag, ref_seq `Some(0)`), every kind and decision.
    fn varied(seq: u64) -> pb::Entry {
        let s = |k: u64| match (seq + k) % 4 {
            0 => String::new(),
            1 => "x".into(),
            2 => "ünïcödé → 日本 ".repeat((seq % 50) as usize + 1),
            _ => format!(r#"{{"k":"{seq}","nested":{{"a":[1,2,3]}}}}"#),
        };
        let big = |k: u64| match (seq + k) % 3 {
            0 => 0,
            1 => 127 + seq,
            _ => u64::MAX - seq,
        };
        pb::Entry {
            seq: big(0),
            time_unix_nanos: match seq % 3 {
                0 => 0,
                1 => -1_000_000_123 * seq as i64,
                _ => i64::MAX - seq as i64,
            },
            kind: (seq % 13) as i32,
            agent: s(1),
            agent_id: s(2),
            session: s(3),
            action: s(4),
            tool: s(5),
            params: s(6),
            decision: (seq % 3) as i32,
            rule: s(7),
            policy_version: big(1),
            reason: s(8),
            writer_uid: big(2) as u32,
            writer_gid: big(3) as u32,
            writer_pid: big(4) as u32,
            host: s(9),
            severity: (seq % 11) as u32,
            flags: (0..seq % 4).map(|k| if k == 1 { String::new() } else { s(k + 10) }).collect(),
            policy_check: s(14),
            shim_id: s(15),
            shim_seq: big(5),
            ref_seq: match seq % 3 {
                0 => None,
                1 => Some(0),
                _ => Some(big(6)),
            },
            details: s(16),
        }
    }

    #[test]
    fn rows_encode_to_the_same_leaf_bytes_as_prost() {
        let rows: Vec<(pb::Entry, Hash)> =
            (0..600).map(|s| (varied(s), ledger_proto::leaf::entry_leaf_hash(&varied(s)))).collect();
        let bytes = parquet_bytes("web-1/ledgerd/0a1b2c3d", &rows).expect("write");
        let mut buf = Vec::new();
        let mut at = 0;
        for batch in batches(bytes.into()).expect("read") {
            let batch = batch.expect("batch");
            let cols = Columns::of(&batch).expect("columns");
            for i in 0..cols.len() {
                let e = &rows[at].0;
                assert!(cols.leaf_bytes_into(i, &mut buf), "row {at} encodes");
                assert_eq!(buf, ledger_proto::leaf::leaf_bytes(e), "row {at}: {e:?}");
                assert_eq!(cols.row(i).entry, *e);
                assert_eq!(cols.null_column(i), None);
                at += 1;
            }
        }
        assert_eq!(at, rows.len());
    }

    #[test]
    fn times_before_1970_round_down() {
        assert_eq!(time_micros(-1), -1);
        assert_eq!(time_micros(1999), 1);
    }
}
