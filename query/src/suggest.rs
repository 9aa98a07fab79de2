//! "Did you mean": the closest known name to a misspelt one.

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
///
/// Distance is optimal string alignment (Levenshtein plus swapping two neighbours, so
/// `agnet` is one edit from `agent`), ignoring case. Up to one edit is accepted for words
/// of up to four characters, two for longer ones.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let len = word.chars().count();
    let limit = if len <= 4 { 1 } else { 2 };
    // Lengths further apart than the limit cannot be close, and a long word (a pasted
    // 100 KB name) is not compared at all.
    if candidates.iter().all(|c| len > c.chars().count() + limit) {
        return None;
    }
    let word = word.to_lowercase();
    let mut best: Option<(usize, &'c str)> = None;
    for &c in candidates {
        if c.chars().count().abs_diff(len) > limit {
            continue;
        }
        let d = distance(&word, &c.to_lowercase());
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance between `a` and `b`, over characters.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the dynamic-programming table: two back, one back, current.
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpositions_and_typos() {
        assert_eq!(distance("agnet", "agent"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(did_you_mean("agnet", &["seq", "agent", "agent_id"]), Some("agent"));
        assert_eq!(did_you_mean("DENY", &["allow", "deny"]), Some("deny"));
        assert_eq!(did_you_mean("maybe", &["allow", "deny"]), None);
    }
}
