//! The Parquet form of entries: the Arrow schema, entries → a record batch → Parquet bytes
//! (the shipper), and Parquet bytes → entries again (the fleet verifier, which re-encodes
//! each row and compares it with the shipped leaf byte for byte).
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
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ledger_proto::merkle::Hash;
use ledger_proto::pb::{self, Decision, Kind};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
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

/// Reads every row of a shipped Parquet file. A missing column or one of another type is
/// an error naming it; values are taken as they are (the caller compares them).
pub fn read_rows(bytes: bytes::Bytes) -> Result<Vec<Row>, ColumnsError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.with_batch_size(64 * 1024).build()?;
    let mut rows = Vec::new();
    for batch in reader {
        rows_of(&batch?, &mut rows)?;
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

fn rows_of(batch: &RecordBatch, out: &mut Vec<Row>) -> Result<(), ColumnsError> {
    use arrow_array::{
        FixedSizeBinaryArray, Int64Array, ListArray, StringArray, TimestampMicrosecondArray, UInt32Array,
        UInt64Array,
    };
    let strings: Vec<&StringArray> = STRING_COLUMNS
        .iter()
        .map(|(name, _)| column::<StringArray>(batch, name))
        .collect::<Result<_, _>>()?;
    let log = column::<StringArray>(batch, "log")?;
    let seq = column::<UInt64Array>(batch, "seq")?;
    let time = column::<TimestampMicrosecondArray>(batch, "time")?;
    let nanos = column::<Int64Array>(batch, "time_unix_nanos")?;
    let policy_version = column::<UInt64Array>(batch, "policy_version")?;
    let uid = column::<UInt32Array>(batch, "writer_uid")?;
    let gid = column::<UInt32Array>(batch, "writer_gid")?;
    let pid = column::<UInt32Array>(batch, "writer_pid")?;
    let severity = column::<UInt32Array>(batch, "severity")?;
    let flags = column::<ListArray>(batch, "flags")?;
    let shim_seq = column::<UInt64Array>(batch, "shim_seq")?;
    let ref_seq = column::<UInt64Array>(batch, "ref_seq")?;
    let leaf_hash = column::<FixedSizeBinaryArray>(batch, "leaf_hash")?;
    let flag_values = flags
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or(ColumnsError::Column { column: "flags", why: "is not a list of strings".into() })?;
    let offsets = flags.value_offsets();
    for i in 0..batch.num_rows() {
        // Indexes into STRING_COLUMNS.
        let text = |k: usize| strings[k].value(i).to_string();
        let kind = strings[0].value(i);
        let decision = strings[7].value(i);
        let (lo, hi) = (offsets[i] as usize, offsets[i + 1] as usize);
        let entry = pb::Entry {
            seq: seq.value(i),
            time_unix_nanos: nanos.value(i),
            // A name this version does not know cannot re-encode to the leaf: the
            // comparison reports the row.
            kind: Kind::from_name(kind).map_or(-1, |k| k as i32),
            agent: text(1),
            agent_id: text(2),
            session: text(3),
            action: text(4),
            tool: text(5),
            params: text(6),
            decision: match decision {
                "" => Decision::Unspecified as i32,
                "allow" => Decision::Allow as i32,
                "deny" => Decision::Deny as i32,
                _ => -1,
            },
            rule: text(8),
            policy_version: policy_version.value(i),
            reason: text(9),
            writer_uid: uid.value(i),
            writer_gid: gid.value(i),
            writer_pid: pid.value(i),
            host: text(10),
            severity: severity.value(i),
            flags: (lo..hi).map(|j| flag_values.value(j).to_string()).collect(),
            policy_check: text(11),
            shim_id: text(12),
            shim_seq: shim_seq.value(i),
            ref_seq: if ref_seq.is_null(i) { None } else { Some(ref_seq.value(i)) },
            details: text(13),
        };
        out.push(Row {
            log: log.value(i).to_string(),
            entry,
            leaf_hash: leaf_hash.value(i).to_vec(),
            time_micros: time.value(i),
        });
    }
    Ok(())
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

    #[test]
    fn times_before_1970_round_down() {
        assert_eq!(time_micros(-1), -1);
        assert_eq!(time_micros(1999), 1);
    }
}
