//! Integers in request bodies the way JSON Schema counts them: `2` and `2.0` are the same
//! integer, so a body field documented as `integer` accepts both (and refuses `2.5`).

use serde::de::Error;
use serde::{Deserialize, Deserializer};
use serde_json::Number;

fn integral<E: Error>(n: &Number) -> Result<i64, E> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
        _ => Err(E::custom(format!("{n} is not an integer"))),
    }
}

/// An optional integer (`null` or absent: `None`).
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<Number>::deserialize(d)?
        .map(|n| integral(&n))
        .transpose()
}

/// An integer.
pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    integral(&Number::deserialize(d)?)
}

/// An optional non-negative integer.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    opt_i64(d)?
        .map(|i| u64::try_from(i).map_err(|_| D::Error::custom(format!("{i} is negative"))))
        .transpose()
}

/// A list of non-negative 32-bit integers.
pub fn vec_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    Vec::<Number>::deserialize(d)?
        .iter()
        .map(|n| {
            let i = integral::<D::Error>(n)?;
            u32::try_from(i).map_err(|_| D::Error::custom(format!("{i} is out of range")))
        })
        .collect()
}

/// An optional list of non-negative 32-bit integers.
pub fn opt_vec_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    Option::<Vec<Number>>::deserialize(d)?
        .map(|v| {
            v.iter()
                .map(|n| {
                    let i = integral::<D::Error>(n)?;
                    u32::try_from(i).map_err(|_| D::Error::custom(format!("{i} is out of range")))
                })
                .collect()
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::opt_i64")]
        a: Option<i64>,
        #[serde(default, deserialize_with = "super::vec_u32")]
        b: Vec<u32>,
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let t: T = serde_json::from_str(r#"{"a": 2.0, "b": [1, 3.0]}"#).unwrap();
        assert_eq!((t.a, t.b), (Some(2), vec![1, 3]));
        let t: T = serde_json::from_str(r#"{"a": null}"#).unwrap();
        assert_eq!(t.a, None);
        assert!(serde_json::from_str::<T>(r#"{"a": 2.5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"b": [-1]}"#).is_err());
    }
}
