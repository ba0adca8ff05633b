//! NetEase Yunxin callback families.
//!
//! NetEase signs its 抄送 (callback copy) with headers over the body's MD5,
//! so, unlike ZEGO, the body holds no signing fields.

pub mod cloud_play;
