//! Writing only the `data` half of an adjacently tagged event.
//!
//! A domain event serializes as `{"type": .., "data": ..}`; the envelope stores the two
//! halves apart. Writing the whole event and parsing the `data` half back out costs a second
//! pass over the text and a second copy of it, on every appended event. [`data_json`]
//! instead hands the event a serializer that ignores the `type` field and passes the `data`
//! field straight to `serde_json`, so the payload text is written once.

use serde::ser::{self, Impossible, Serialize, SerializeStruct, Serializer};
use serde_json::value::RawValue;

/// The JSON text of `event`'s `data` half (`null` for a variant without data); `None` when
/// `event` does not serialize as an adjacently tagged struct.
pub(super) fn data_json<T: Serialize>(event: &T) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&DataOf(event)).ok()
}

/// Serializes the wrapped event through [`Picker`].
struct DataOf<'a, T>(&'a T);

impl<T: Serialize> Serialize for DataOf<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Picker(s))
    }
}

/// A serializer that accepts only a struct, and of it writes only the `data` field.
struct Picker<S>(S);

/// The struct of [`Picker`]: keeps the inner serializer until the `data` field comes.
struct PickData<S: Serializer> {
    inner: Option<S>,
    out: Option<S::Ok>,
}

fn not_tagged<E: ser::Error>() -> E {
    E::custom("an event must serialize as {\"type\": .., \"data\": ..}")
}

impl<S: Serializer> SerializeStruct for PickData<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        if key == "data" {
            let inner = self.inner.take().ok_or_else(not_tagged)?;
            self.out = Some(value.serialize(inner)?);
        }
        Ok(())
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        match (self.out, self.inner) {
            (Some(ok), _) => Ok(ok),
            // A unit variant: only `type` was written.
            (None, Some(inner)) => inner.serialize_unit(),
            (None, None) => Err(not_tagged()),
        }
    }
}

/// The methods of [`Picker`] for everything but a struct: all refuse.
macro_rules! refuse {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<S::Ok, S::Error> { Err(not_tagged()) })*
    };
}

impl<S: Serializer> Serializer for Picker<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = PickData<S>;
    type SerializeStructVariant = Impossible<S::Ok, S::Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<PickData<S>, S::Error> {
        Ok(PickData {
            inner: Some(self.0),
            out: None,
        })
    }

    refuse! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_u8(u8), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_f32(f32), serialize_f64(f64), serialize_char(char),
        serialize_str(&str), serialize_bytes(&[u8]), serialize_none(), serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(not_tagged())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_tagged())
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_tagged())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Err(not_tagged())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        Err(not_tagged())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Err(not_tagged())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Err(not_tagged())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(not_tagged())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Err(not_tagged())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[derive(serde::Serialize)]
    #[serde(tag = "type", content = "data", rename_all = "snake_case")]
    enum Ev {
        Plain { a: u32, b: String },
        Wrapped(Value),
        Bare,
    }

    #[test]
    fn only_the_data_half_is_written() {
        for ev in [
            Ev::Plain {
                a: 1,
                b: "x\"y".into(),
            },
            Ev::Wrapped(json!({"k": [1, 2]})),
            Ev::Bare,
        ] {
            let whole = serde_json::to_value(&ev).unwrap();
            let data = data_json(&ev).unwrap();
            let want = whole.get("data").cloned().unwrap_or(Value::Null);
            assert_eq!(serde_json::from_str::<Value>(data.get()).unwrap(), want);
        }
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(data_json(&5).is_none());
        assert!(data_json(&json!({"type": "x", "data": 1})).is_none());
    }
}
