//! Pins the worked example of docs/FORMAT.md's leaf section, so the doc cannot drift from
//! the code: the exact leaf bytes and leaf hash of one entry.

use ledger_proto::pb::{Decision, Entry, Kind};
use ledger_proto::{leaf, merkle};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry shown in docs/FORMAT.md.
fn example() -> Entry {
    Entry {
        seq: 5,
        time_unix_nanos: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
        kind: Kind::Decision as i32,
        agent: "billing-bot".into(),
        tool: "db.query".into(),
        params: r#"{"sql":"select 1"}"#.into(),
        decision: Decision::Allow as i32,
        rule: "read-invoices".into(),
        policy_version: 2,
        writer_uid: 1000,
        ..Default::default()
    }
}

#[test]
fn format_doc_leaf_example() {
    let bytes = leaf::leaf_bytes(&example());
    let hash = merkle::leaf_hash(&bytes);
    if std::env::var_os("PRINT_FORMAT_EXAMPLE").is_some() {
        println!("bytes {}\nhash {}", hex(&bytes), hex(&hash));
    }
    assert_eq!(hex(&bytes), EXPECTED_BYTES);
    assert_eq!(hex(&hash), EXPECTED_HASH);
    assert_eq!(leaf::decode_canonical(&bytes).as_ref(), Ok(&example()));
}

const EXPECTED_BYTES: &str = "0805108080e8ef9eca9cc3181801220b62696c6c696e672d626f74420864622e71756572794a127b2273716c223a2273656c6563742031227d50015a0d726561642d696e766f69636573600270e807";
const EXPECTED_HASH: &str = "45855b4b5f1471e902d534b8b7bad24696676ed3e1fc5b2ffc99659b37dff947";

/// Issue 13: FORMAT.md once said "these 71 leaf bytes" of a 79-byte leaf. The count it
/// states and every hex byte of the listing must be the leaf's.
#[test]
fn format_doc_states_the_leaf_length_and_bytes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md"))
        .expect("FORMAT.md");
    let bytes = leaf::leaf_bytes(&example());
    let stated = format!("has these\n{} leaf bytes:", bytes.len());
    assert!(doc.contains(&stated), "FORMAT.md must say {stated:?}");
    // The listing: the code block after that sentence, hex pairs before each comment.
    let block = doc.split(&stated).nth(1).and_then(|rest| rest.split("```").nth(1)).expect("the listing");
    let listed: String = block
        .lines()
        .filter_map(|line| line.split("field").next())
        .flat_map(|part| part.split_whitespace())
        .filter(|t| t.len() == 2 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(listed, hex(&bytes));
}
