//! The one thing the engine needs from a stored entry: its fields, by name.

use crate::field::Field;
use crate::value::Value;

/// A ledger entry as the query engine sees it.
///
/// The daemon implements this for its stored (archived) entry and returns borrowed strings,
/// so filtering allocates nothing for plain string fields:
///
/// ```
/// use ledger_query::{Field, Record, Value};
///
/// struct Entry<'a> { seq: u64, time: i64, agent: &'a str, params: &'a str, flags: Vec<&'a str> }
///
/// impl Record for Entry<'_> {
///     fn get(&self, field: &Field) -> Value<'_> {
///         match field {
///             Field::Seq => Value::from(self.seq),
///             Field::Time => Value::Time(self.time),
///             Field::Agent => Value::text(self.agent),
///             // Always the whole JSON text: the engine resolves `params.a.b` itself.
///             Field::Params(_) => Value::text(self.params),
///             Field::Flags => Value::List(self.flags.iter().map(|f| Value::text(f)).collect()),
///             _ => Value::Missing,
///         }
///     }
/// }
/// ```
///
/// Rules for implementations:
///
/// - `kind`, `decision` and `policy_check` are returned as their lowercase names
///   (`"policy_changed"`, `"deny"`, `"stale_version"`), `time` as [`Value::Time`].
/// - Return [`Value::Missing`] (or an empty string) for what is not set: an empty string, an
///   unspecified enum, `ref_seq` when absent, `severity` 0 ("not scored"). Zero-valued
///   numbers that mean something (`seq` 0, `uid` 0) are returned as they are.
/// - For `Field::Params(_)` and `Field::Details(_)` return the whole JSON text, whatever
///   the path: the engine only ever asks with an empty path, parses the text at most once
///   per entry and only when the query reaches into it, and walks the path itself.
pub trait Record {
    /// The value of `field` in this entry.
    fn get(&self, field: &Field) -> Value<'_>;
}

impl<T: Record + ?Sized> Record for &T {
    fn get(&self, field: &Field) -> Value<'_> {
        (**self).get(field)
    }
}
