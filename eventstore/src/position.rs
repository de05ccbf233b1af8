//! Positions and offsets in the global order (SPEC section 3).
//!
//! A [`Position`] names one event: `<partition>@<redis stream id>`, e.g. `7@1732269600123-0`.
//! An [`Offset`] tells a reader where to start: `start`, `end`, an RFC 3339 timestamp, or a
//! set of positions, one per partition (`0@1732269600123-0,1@...`). Reading "from" an offset
//! always means reading the events strictly *after* it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// The id of an entry in one partition log: Redis stream id `<ms>-<seq>`.
///
/// Ordered like Redis orders stream ids: by milliseconds, then sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogId {
    /// Milliseconds part (Redis uses the server clock when assigning ids).
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl LogId {
    /// The id before every real entry (`0-0`).
    pub const ZERO: LogId = LogId { ms: 0, seq: 0 };

    /// Creates an id from its two parts.
    pub fn new(ms: u64, seq: u64) -> Self {
        LogId { ms, seq }
    }

    /// The last id strictly before the first entry at or after `ms`: reading after it yields
    /// every entry whose id is `>= ms-0`.
    pub fn just_before_ms(ms: u64) -> Self {
        if ms == 0 {
            LogId::ZERO
        } else {
            LogId {
                ms: ms - 1,
                seq: u64::MAX,
            }
        }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for LogId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::new(format!("invalid log id {s:?}, expected <ms>-<seq>"));
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(LogId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One event's place in the global order: partition plus log id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Partition number, `0..P`.
    pub partition: u32,
    /// Entry id in that partition's log.
    pub id: LogId,
}

impl Position {
    /// Creates a position.
    pub fn new(partition: u32, id: LogId) -> Self {
        Position { partition, id }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.partition, self.id)
    }
}

impl FromStr for Position {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (p, id) = s.split_once('@').ok_or_else(|| {
            ParseError::new(format!(
                "invalid position {s:?}, expected <partition>@<ms>-<seq>"
            ))
        })?;
        let partition = p
            .parse()
            .map_err(|_| ParseError::new(format!("invalid partition {p:?} in position {s:?}")))?;
        Ok(Position {
            partition,
            id: id.parse()?,
        })
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a reader starts. Resolved against a store into a [`Cursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offset {
    /// Before the first event of every partition.
    Start,
    /// After the last event of every partition at the time of resolution.
    End,
    /// Before the first event appended at or after this time.
    Timestamp(DateTime<Utc>),
    /// Explicit per-partition positions; partitions not named start at the beginning.
    Positions(Vec<Position>),
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offset::Start => f.write_str("start"),
            Offset::End => f.write_str("end"),
            Offset::Timestamp(t) => {
                f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }
            Offset::Positions(ps) => {
                let parts: Vec<String> = ps.iter().map(Position::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl FromStr for Offset {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "start" => return Ok(Offset::Start),
            "end" => return Ok(Offset::End),
            "" => return Err(ParseError::new("empty offset")),
            _ => {}
        }
        if s.contains('@') {
            let mut seen = BTreeMap::new();
            for part in s.split(',') {
                let p: Position = part.trim().parse()?;
                if seen.insert(p.partition, p).is_some() {
                    return Err(ParseError::new(format!(
                        "partition {} appears twice in offset {s:?}",
                        p.partition
                    )));
                }
            }
            return Ok(Offset::Positions(seen.into_values().collect()));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Offset::Timestamp(t.with_timezone(&Utc)))
            .map_err(|_| {
                ParseError::new(format!(
                    "invalid offset {s:?}: expected start, end, an RFC 3339 timestamp or \
                     <partition>@<ms>-<seq>[,...]"
                ))
            })
    }
}

/// A resolved offset: for every partition, the log id after which reading continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    after: Vec<LogId>,
}

impl Cursor {
    /// A cursor at the start of every one of `partitions` partitions.
    pub fn start(partitions: u32) -> Self {
        Cursor {
            after: vec![LogId::ZERO; partitions as usize],
        }
    }

    /// Builds a cursor from one log id per partition (index = partition).
    pub fn from_ids(after: Vec<LogId>) -> Self {
        Cursor { after }
    }

    /// Number of partitions covered.
    pub fn partitions(&self) -> u32 {
        self.after.len() as u32
    }

    /// The id after which partition `p` continues.
    pub fn after(&self, partition: u32) -> LogId {
        self.after
            .get(partition as usize)
            .copied()
            .unwrap_or(LogId::ZERO)
    }

    /// Moves partition `p` forward to `id` (never backwards).
    pub fn advance(&mut self, position: Position) {
        if let Some(slot) = self.after.get_mut(position.partition as usize) {
            if position.id > *slot {
                *slot = position.id;
            }
        }
    }

    /// True when `position` lies strictly after this cursor.
    pub fn is_before(&self, position: &Position) -> bool {
        position.id > self.after(position.partition)
    }

    /// The cursor written as an explicit offset.
    pub fn to_offset(&self) -> Offset {
        Offset::Positions(
            self.after
                .iter()
                .enumerate()
                .map(|(p, id)| Position::new(p as u32, *id))
                .collect(),
        )
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_offset().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips() {
        let p: Position = "7@1732269600123-0".parse().unwrap();
        assert_eq!(p, Position::new(7, LogId::new(1732269600123, 0)));
        assert_eq!(p.to_string(), "7@1732269600123-0");
    }

    #[test]
    fn bad_positions_are_rejected() {
        for s in ["", "7", "x@1-0", "7@1", "7@a-0", "7@1-b", "-1@1-0"] {
            assert!(s.parse::<Position>().is_err(), "{s}");
        }
    }

    #[test]
    fn offsets_parse_and_print() {
        assert_eq!("start".parse::<Offset>().unwrap(), Offset::Start);
        assert_eq!("end".parse::<Offset>().unwrap(), Offset::End);
        let o: Offset = "1@5-1,0@3-0".parse().unwrap();
        assert_eq!(o.to_string(), "0@3-0,1@5-1");
        let t: Offset = "2026-11-22T10:00:00.123Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-22T10:00:00.123Z");
        let t2: Offset = "2026-11-22T11:00:00.123+01:00".parse().unwrap();
        assert_eq!(t, t2);
        assert!("0@1-0,0@2-0".parse::<Offset>().is_err());
        assert!("yesterday".parse::<Offset>().is_err());
    }

    #[test]
    fn log_ids_order_like_redis() {
        assert!(LogId::new(1, 5) < LogId::new(2, 0));
        assert!(LogId::just_before_ms(10) < LogId::new(10, 0));
        assert!(LogId::just_before_ms(10) > LogId::new(9, 999));
    }

    #[test]
    fn cursor_only_moves_forward() {
        let mut c = Cursor::start(2);
        c.advance(Position::new(1, LogId::new(5, 0)));
        c.advance(Position::new(1, LogId::new(4, 0)));
        assert_eq!(c.after(1), LogId::new(5, 0));
        assert!(c.is_before(&Position::new(1, LogId::new(5, 1))));
        assert!(!c.is_before(&Position::new(1, LogId::new(5, 0))));
        assert_eq!(c.to_string(), "0@0-0,1@5-0");
    }
}
