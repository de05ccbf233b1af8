//! Reading what the scripts and streams answer: stored entries as recorded events,
//! append answers as positions, and Redis errors as store errors.

use super::*;

/// Maps a client error: connection problems become `Unavailable` naming the URL.
pub(crate) fn map_redis_error(url: &str, e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable {
            url: url.to_owned(),
            message: e.to_string(),
        }
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Parses an idempotency record `"<first> <last> <id>,<id>..."` into a replayed result.
pub(super) fn parse_record(p: u32, stream: String, record: &str) -> Option<AppendResult> {
    let mut it = record.splitn(3, ' ');
    let first_version = it.next()?.parse().ok()?;
    let last_version = it.next()?.parse().ok()?;
    let positions = parse_positions(p, it.next().unwrap_or("").split(','))?;
    Some(AppendResult {
        stream,
        first_version,
        last_version,
        positions,
        replayed: true,
    })
}

/// Parses log entry ids returned by the append script into positions of partition `p`.
pub(super) fn parse_positions<'a>(
    p: u32,
    ids: impl Iterator<Item = &'a str>,
) -> Option<Vec<Position>> {
    ids.map(|id| id.parse().ok().map(|id| Position::new(p, id)))
        .collect()
}

pub(super) fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(super) fn string_of(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        other => bytes_of(other).map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}

/// Decodes one `[id, [field, value, ...]]` stream entry into a recorded event.
pub(crate) fn decode_entry(partition: u32, entry: &Value) -> Result<RecordedEvent, StoreError> {
    let bad = |at: String, message: &str| {
        StoreError::Decode(DecodeError {
            at,
            message: message.to_owned(),
        })
    };
    let Value::Array(parts) = entry else {
        return Err(bad(
            format!("partition {partition}"),
            "log entry is not an array",
        ));
    };
    let id_str = parts.first().and_then(string_of).unwrap_or_default();
    let id: LogId = id_str.parse().map_err(|_| {
        bad(
            format!("partition {partition}"),
            "log entry has no valid id",
        )
    })?;
    let position = Position::new(partition, id);
    let fields = match parts.get(1) {
        Some(Value::Array(f)) => f.as_slice(),
        Some(Value::Map(_)) | None | Some(_) => &[],
    };
    let json = fields
        .chunks(2)
        .find(|kv| kv.first().and_then(bytes_of) == Some(b"event".as_slice()))
        .and_then(|kv| kv.get(1).and_then(bytes_of))
        .ok_or_else(|| bad(position.to_string(), "log entry has no `event` field"))?;
    let envelope = codec::decode(json, &position)?;
    Ok(RecordedEvent { position, envelope })
}
