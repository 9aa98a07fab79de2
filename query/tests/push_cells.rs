//! Issue 17: rows written straight from records (`Pipeline::push_cells` into
//! `CsvWriter::cell`) are byte for byte the rows a pipeline builds and `write_rows` writes.

use ledger_query::{Context, CsvWriter, Field, Record, Value, parse};

struct E {
    seq: u64,
    agent: &'static str,
    decision: &'static str,
    params: &'static str,
    flags: Vec<&'static str>,
}

impl Record for E {
    fn get(&self, f: &Field) -> Value<'_> {
        match f {
            Field::Seq => Value::from(self.seq),
            Field::Time => Value::Time(1_767_225_600_000_000_000 + self.seq as i64 * 1_000_000_000),
            Field::Agent => Value::text(self.agent),
            Field::Decision => Value::text(self.decision),
            Field::Params(_) => Value::text(self.params),
            Field::Flags => Value::List(self.flags.iter().map(|s| Value::text(s)).collect()),
            _ => Value::Missing,
        }
    }
}

fn entries() -> Vec<E> {
    let agents = ["ops-bot", "=cmd", "a,b", "line\nbreak", "quote\"d", ""];
    (0..40u64)
        .map(|seq| E {
            seq,
            agent: agents[seq as usize % agents.len()],
            decision: if seq % 3 == 0 { "deny" } else { "allow" },
            params: [r#"{"path":"/etc/x","n":30.0}"#, "", r#"{"v":[1,"-2"]}"#][seq as usize % 3],
            flags: if seq % 4 == 0 { vec!["deny_burst", "+x"] } else { Vec::new() },
        })
        .collect()
}

#[test]
fn cells_written_directly_equal_rows_written() {
    let ctx = Context::utc(jiff::Timestamp::UNIX_EPOCH);
    let queries = [
        "",
        "decision = deny",
        "| fields seq, agent, params.n, flags, hour(time) | limit 7",
        "params.path ~ \"/etc/*\" | fields agent as who, params",
        "| sort agent desc",
        "| count by agent",
        "decision = allow | fields seq | where seq > 10 | limit 3",
        "| limit 0",
    ];
    for text in queries {
        let query = parse(text).expect("parses");
        let tz = ctx.tz().clone();
        // Rows built by the pipeline.
        let mut built = Vec::new();
        let mut writer = CsvWriter::new(&mut built, query.columns(), tz.clone()).expect("header");
        let mut pipeline = query.pipeline(&ctx);
        for e in &entries() {
            if pipeline.is_done() {
                break;
            }
            pipeline.push(e);
        }
        writer.write_rows(&pipeline.finish().rows).expect("rows");
        let (built_rows, built_neutralised) = (writer.rows(), writer.finish().expect("finish"));
        // Cells handed out as they come.
        let mut direct = Vec::new();
        let mut writer = CsvWriter::new(&mut direct, query.columns(), tz).expect("header");
        let mut pipeline = query.pipeline(&ctx);
        for e in &entries() {
            if pipeline.is_done() {
                break;
            }
            if pipeline.push_cells(e, &mut |v| writer.cell(v)) {
                writer.end_row().expect("row");
            }
            writer.write_rows(&pipeline.take_rows()).expect("rows");
        }
        writer.write_rows(&pipeline.finish().rows).expect("rows");
        let (direct_rows, direct_neutralised) = (writer.rows(), writer.finish().expect("finish"));
        assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&built), "query {text:?}");
        assert_eq!((direct_rows, direct_neutralised), (built_rows, built_neutralised), "query {text:?}");
    }
}
