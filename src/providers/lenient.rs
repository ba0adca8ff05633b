//! Lenient field readers shared by every family.
//!
//! The vendors disagree with their own docs about types: ZEGO's cloud-player
//! table says `AppID`/`EventTime` are numbers while its upload example sends
//! strings, the stream family sends every number as a string (`"stream_seq":
//! "01"`) except `room_create`/`room_close`, which send numbers, and NetEase IM
//! sends `"200"` where NERTC sends `200`. A callback is authentic before it is
//! parsed, so a surprising type must never reject it: each reader here accepts
//! the plausible shapes and maps anything else to `None` (the raw payload is
//! stored beside the typed event, so nothing is lost).
//!
//! The `deserialize_with` functions take any [`Deserializer`]; the `*_value`
//! functions apply the same rules to a `&Value` without cloning it.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A number or numeric string as `i64`.
///
/// Strings are trimmed and may have leading zeros (`"01"` is 1); an empty or
/// non-numeric string, a fraction, an out-of-range value, a bool, null, an
/// array or an object are `None`. Use with `#[serde(default)]`.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(IntVisitor)
}

/// A string, or a number written as a string, as `String`.
///
/// This is the reader for ids: ids that can exceed 2^53 (`room_session_id`,
/// `room_seq`, `session_id`, `file_id`, nonces) arrive as strings or as JSON
/// integers, and serde_json keeps integers up to `u64::MAX` exact, so the
/// text written out is the vendor's digits. Bools, null, arrays and objects
/// are `None`.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(StringVisitor)
}

/// An array of strings, or a single string, as `Vec<String>`.
///
/// ZEGO sends `rtmp_url` as an array in `stream_create` and as a single string
/// in `mix_start`; a form body may carry one value where JSON would carry an
/// array. An empty string is an empty list; array items that are not strings
/// or numbers are skipped.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(StringsVisitor)
}

/// A field type [`field`] can read: `Option<i64>`, `Option<String>`, `Option<Vec<String>>`.
pub trait Lenient: Sized {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl Lenient for Option<i64> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int(d)
    }
}

impl Lenient for Option<String> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string(d)
    }
}

impl Lenient for Option<Vec<String>> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        strings(d)
    }
}

/// [`int`], [`string`] or [`strings`], chosen by the field's type, so every
/// field of a [`lenient_struct!`] carries the same attribute.
pub fn field<'de, D: Deserializer<'de>, T: Lenient>(d: D) -> Result<T, D::Error> {
    T::read(d)
}

/// Declares a callback struct of optional, leniently read fields.
///
/// Every field must be `Option<i64>`, `Option<String>` or
/// `Option<Vec<String>>`; the macro adds `#[serde(deserialize_with =
/// "lenient::field", skip_serializing_if = "Option::is_none")]` to each and
/// `#[serde(default)]` to the struct. So a missing field is `None`, a field of
/// a surprising type is `None` instead of an error, an absent value is left
/// out when serializing, and unknown fields are ignored: deserializing such a
/// struct from a JSON object cannot fail.
macro_rules! lenient_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        // The derive comes first: `#[serde(...)]` container attributes in
        // `$meta` are its helpers.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        $(#[$meta])*
        #[serde(default)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(
                    deserialize_with = "crate::providers::lenient::field",
                    skip_serializing_if = "Option::is_none"
                )]
                pub $field: $ty,
            )*
        }
    };
}
pub(crate) use lenient_struct;

/// [`int`] applied to a JSON value.
pub fn int_value(v: &Value) -> Option<i64> {
    int(v).ok().flatten()
}

/// [`string`] applied to a JSON value.
pub fn string_value(v: &Value) -> Option<String> {
    string(v).ok().flatten()
}

/// An integral float as `i64`; `None` for fractions, NaN and out-of-range values.
fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every finite float below it fits in i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    // `i64::from_str` accepts a sign and leading zeros; the float fallback only
    // runs for the rare `"1681221508.0"` or `"1e3"` and never for good input.
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().and_then(float_to_int))
}

/// Consumes whatever a visitor was handed without keeping it.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or a numeric string")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).ok())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(float_to_int(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(parse_int(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| None)
    }
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Only reached for fractions or integers beyond u64; the digits are
        // already lost by then, so write what serde_json would.
        Ok(Some(v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| None)
    }
}

/// One array item read with [`StringVisitor`].
struct Item(Option<String>);

impl<'de> de::Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringVisitor).map(Item)
    }
}

struct StringsVisitor;

impl<'de> Visitor<'de> for StringsVisitor {
    type Value = Option<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings or a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(if v.trim().is_empty() {
            Vec::new()
        } else {
            vec![v.to_owned()]
        }))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(vec![v.to_string()]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(vec![v.to_string()]))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(vec![v.to_string()]))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(Item(item)) = seq.next_element()? {
            out.extend(item);
        }
        Ok(Some(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    lenient_struct! {
        /// A struct the way the families declare theirs.
        pub struct Sample {
            pub n: Option<i64>,
            pub s: Option<String>,
            pub urls: Option<Vec<String>>,
        }
    }

    fn sample(v: Value) -> Sample {
        Sample::deserialize(&v).expect("lenient fields never fail")
    }

    #[test]
    fn integers_come_from_numbers_and_numeric_strings() {
        assert_eq!(int_value(&json!(1687981272742_i64)), Some(1687981272742));
        assert_eq!(int_value(&json!("1687981272742")), Some(1687981272742));
        assert_eq!(int_value(&json!("01")), Some(1));
        assert_eq!(int_value(&json!(" 700 ")), Some(700));
        assert_eq!(int_value(&json!("-1")), Some(-1));
        assert_eq!(int_value(&json!(30.0)), Some(30));
        assert_eq!(int_value(&json!("1681221508.0")), Some(1681221508));
    }

    #[test]
    fn integers_are_none_for_empty_junk_and_out_of_range_input() {
        for v in [
            json!(""),
            json!("  "),
            json!("abc"),
            json!(1.5),
            json!("NaN"),
            json!(true),
            json!(null),
            json!([1]),
            json!({"x": 1}),
            json!(u64::MAX),
        ] {
            assert_eq!(int_value(&v), None, "{v}");
        }
    }

    #[test]
    fn strings_come_from_strings_and_numbers_with_exact_digits() {
        assert_eq!(string_value(&json!("abc")).as_deref(), Some("abc"));
        assert_eq!(
            string_value(&json!(858012925204410400_u64)).as_deref(),
            Some("858012925204410400")
        );
        assert_eq!(
            string_value(&json!(7254119327986670314_u64)).as_deref(),
            Some("7254119327986670314")
        );
        assert_eq!(string_value(&json!(-3)).as_deref(), Some("-3"));
        assert_eq!(string_value(&json!({"a": 1})), None);
        assert_eq!(string_value(&json!(false)), None);
    }

    #[test]
    fn big_integer_ids_parsed_from_json_text_keep_their_digits() {
        let v: Value = serde_json::from_str(r#"{"id": 858012925204410400}"#).unwrap();
        assert_eq!(
            string_value(&v["id"]).as_deref(),
            Some("858012925204410400")
        );
    }

    #[test]
    fn url_lists_come_from_arrays_or_single_strings() {
        assert_eq!(
            sample(json!({"urls": ["a", "b"]})).urls,
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(sample(json!({"urls": "a"})).urls, Some(vec!["a".into()]));
        assert_eq!(sample(json!({"urls": ""})).urls, Some(vec![]));
        assert_eq!(
            sample(json!({"urls": ["a", {"x": 1}, null, 2]})).urls,
            Some(vec!["a".into(), "2".into()])
        );
        assert_eq!(sample(json!({"urls": {"x": 1}})).urls, None);
    }

    #[test]
    fn absent_fields_are_left_out_when_serializing() {
        let v = serde_json::to_value(sample(json!({"n": "01", "s": null, "extra": 1}))).unwrap();
        assert_eq!(v, json!({"n": 1}));
    }

    #[test]
    fn a_struct_of_lenient_fields_survives_every_wrong_type() {
        let s = sample(json!({"n": {"x": [1, 2]}, "s": [1, {"y": 2}], "urls": true}));
        assert_eq!((s.n, s.s, s.urls), (None, None, None));
        let s = sample(json!({"n": null, "s": null, "urls": null}));
        assert_eq!((s.n, s.s, s.urls), (None, None, None));
        let s = sample(json!({}));
        assert_eq!((s.n, s.s, s.urls), (None, None, None));
    }
}
