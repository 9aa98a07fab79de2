//! Newline-delimited input read with a bound on each line, blocking or async: a sender that
//! never writes a newline (a hostile MCP server, a JSON-lines file that is one huge line)
//! costs at most the bound in memory, and the caller learns that the line was too long
//! (its length is still counted, its bytes are skipped) instead of running out of memory or
//! cutting it silently.

use std::io::{self, BufRead};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read by [`next_line`] / [`next_line_async`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line's bytes, without its `\n` (or `\r\n`).
    Bytes(Vec<u8>),
    /// The line had more than the bound's bytes (this many, without its newline); it was
    /// read to its end and dropped.
    TooLong(u64),
}

/// How one buffered chunk continues the current line.
struct Fed {
    /// Bytes of the chunk that belong to this line (its newline included).
    used: usize,
    /// The line ended in this chunk.
    ended: bool,
}

/// Adds the part of `chunk` up to and including the first newline to the line in `buf`,
/// keeping at most `max` bytes of it (`total` counts them all).
fn feed(chunk: &[u8], buf: &mut Vec<u8>, total: &mut u64, max: usize) -> Fed {
    let (part, used, ended) = match chunk.iter().position(|&b| b == b'\n') {
        Some(i) => (&chunk[..i], i + 1, true),
        None => (chunk, chunk.len(), false),
    };
    *total += part.len() as u64;
    if *total <= max as u64 {
        buf.extend_from_slice(part);
    }
    Fed { used, ended }
}

/// The line once its end (or the input's) is reached; `None` at the end of the input.
fn finish(mut buf: Vec<u8>, total: u64, max: usize, ended: bool) -> Option<Line> {
    if !ended && total == 0 {
        return None;
    }
    if total > max as u64 {
        return Some(Line::TooLong(total));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Some(Line::Bytes(buf))
}

/// The one reading loop of [`next_line`] and [`next_line_async`]; `$fill` is the reader's
/// `fill_buf` call, blocking or awaited.
macro_rules! read_bounded_line {
    ($reader:ident, $max:ident, $fill:expr) => {{
        let (mut buf, mut total) = (Vec::new(), 0u64);
        loop {
            let chunk = $fill?;
            if chunk.is_empty() {
                return Ok(finish(buf, total, $max, false));
            }
            let fed = feed(chunk, &mut buf, &mut total, $max);
            $reader.consume(fed.used);
            if fed.ended {
                return Ok(finish(buf, total, $max, true));
            }
        }
    }};
}

/// Reads the next line of at most `max` bytes from `reader` (`None` at the end).
pub fn next_line(reader: &mut impl BufRead, max: usize) -> io::Result<Option<Line>> {
    read_bounded_line!(reader, max, reader.fill_buf())
}

/// [`next_line`] for an async reader.
pub async fn next_line_async<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<Option<Line>> {
    read_bounded_line!(reader, max, reader.fill_buf().await)
}

/// `N bytes` in words for messages (`64 MiB`, `1.5 KiB`, `12 bytes`).
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let whole = bytes / size;
            let tenth = (bytes % size) * 10 / size;
            return if tenth == 0 { format!("{whole} {unit}") } else { format!("{whole}.{tenth} {unit}") };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize, capacity: usize) -> Vec<Line> {
        let mut reader = io::BufReader::with_capacity(capacity, input);
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut reader, max).expect("reading a slice") {
            out.push(line);
        }
        out
    }

    fn bytes(s: &str) -> Line {
        Line::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_within_the_bound_whatever_the_buffer_size() {
        for capacity in [1, 2, 3, 7, 64, 8192] {
            let got = all(b"one\ntwo\r\n\nlast without newline", 32, capacity);
            assert_eq!(
                got,
                vec![bytes("one"), bytes("two"), bytes(""), bytes("last without newline")],
                "{capacity}"
            );
            assert_eq!(all(b"", 32, capacity), vec![]);
            assert_eq!(all(b"\n", 32, capacity), vec![bytes("")]);
        }
    }

    #[test]
    fn a_line_over_the_bound_is_counted_skipped_and_reading_goes_on() {
        for capacity in [1, 3, 16, 8192] {
            let input = [b"short\n".as_slice(), &[b'x'; 100], b"\nafter\n", &[b'y'; 11]].concat();
            let got = all(&input, 10, capacity);
            assert_eq!(
                got,
                vec![bytes("short"), Line::TooLong(100), bytes("after"), Line::TooLong(11)],
                "{capacity}"
            );
        }
        // Exactly the bound is a line; one more byte is not.
        assert_eq!(all(b"0123456789\n", 10, 4), vec![bytes("0123456789")]);
        assert_eq!(all(b"0123456789a\n", 10, 4), vec![Line::TooLong(11)]);
    }

    #[tokio::test]
    async fn async_reads_the_same_lines() {
        let input = [b"a\r\n".as_slice(), &[b'z'; 50], b"\nb"].concat();
        let mut reader = tokio::io::BufReader::with_capacity(4, input.as_slice());
        let mut got = Vec::new();
        while let Some(line) = next_line_async(&mut reader, 20).await.expect("reading a slice") {
            got.push(line);
        }
        assert_eq!(got, vec![bytes("a"), Line::TooLong(50), bytes("b")]);
    }

    #[test]
    fn sizes_in_words() {
        assert_eq!(size_text(12), "12 bytes");
        assert_eq!(size_text(64 << 20), "64 MiB");
        assert_eq!(size_text(1536), "1.5 KiB");
    }
}
