//! Events as the stores receive them: a ZEGO `stream_create` callback body
//! (the shape of tests/fixtures/seeds/zego_stream_create.json with the
//! values `hookrelay send --emit` generates for bench/run.sh: compact JSON,
//! ~1.1 KB) with fresh ids per event, and for today's store the envelope
//! hookrelay serializes from it (~2.4 KB).

use std::fmt::Write;

/// One event on its way to the writer.
pub struct Ev {
    /// Which producer waits for the ack.
    pub producer: usize,
    pub received_at_ms: i64,
    /// Random 128-bit keys, like the SHA-256 prefixes hookrelay computes.
    pub dedup: u128,
    pub sig: u128,
    /// The raw body (new stores) or the envelope (today's store).
    pub body: Vec<u8>,
    /// Today's store only: the UUIDv7 id and the resource (stream id).
    pub id: String,
    pub resource: String,
    /// Today's store only: the keys as the 32-hex text ingest computes.
    pub dedup_hex: String,
    pub sig_hex: String,
}

/// The per-event fields of a generated callback, as `hookrelay send
/// --emit` (src/providers/zego/stream.rs `sample`) makes them.
struct Fields {
    secs: i64,
    ms: i64,
    nonce: u64,
    signature: (u128, u32),
    room: String,
    session: u64,
    user: String,
    stream: String,
    sid: String,
    title: String,
    seq: u64,
}

pub struct Generator {
    rng: fastrand::Rng,
    /// Whether the store wants the envelope (today's store) or the raw body.
    envelope: bool,
    run: String,
    run_num: u64,
    i: u64,
}

impl Generator {
    pub fn new(seed: u64, envelope: bool) -> Generator {
        let mut rng = fastrand::Rng::with_seed(seed);
        let run = format!("{:08x}", rng.u32(..));
        let run_num = rng.u64(1_000_000_000..10_000_000_000);
        Generator {
            rng,
            envelope,
            run,
            run_num,
            i: 0,
        }
    }

    pub fn next(&mut self, producer: usize) -> Ev {
        let now = now_ms();
        let f = self.fields(now);
        let dedup = self.rng.u128(..);
        let sig = self.rng.u128(..);
        if self.envelope {
            let id = uuid::Uuid::now_v7().to_string();
            let body = envelope(&f, &id, now, dedup).into_bytes();
            Ev {
                producer,
                received_at_ms: now,
                dedup,
                sig,
                body,
                id,
                resource: f.stream,
                dedup_hex: format!("{dedup:032x}"),
                sig_hex: format!("{sig:032x}"),
            }
        } else {
            Ev {
                producer,
                received_at_ms: now,
                dedup,
                sig,
                body: raw_body(&f).into_bytes(),
                id: String::new(),
                resource: String::new(),
                dedup_hex: String::new(),
                sig_hex: String::new(),
            }
        }
    }

    fn fields(&mut self, now: i64) -> Fields {
        let (run, i) = (&self.run, self.i);
        self.i += 1;
        let r = &mut self.rng;
        Fields {
            secs: now / 1000,
            ms: now,
            nonce: r.u64(..) >> 1,
            signature: (r.u128(..), r.u32(..)),
            room: format!("room-{run}-{}", i / 16),
            session: r.u64(..) >> 1,
            user: format!("user-{run}-{i}"),
            stream: format!("stream-{run}-{i}"),
            sid: format!("s-{}{i:017}", self.run_num),
            title: format!("live {i}"),
            seq: i % 100_000 + 1,
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The callback body as the benchmark's load generator sends it: compact
/// JSON, ~1.1 KB.
fn raw_body(f: &Fields) -> String {
    let mut b = String::with_capacity(1300);
    b.push('{');
    members(&mut b, f, Members::Body);
    b.push('}');
    b
}

#[derive(PartialEq)]
enum Members {
    /// As received, signature included.
    Body,
    /// The envelope's `raw`: the decoded payload without the signature.
    Raw,
    /// The envelope's `event`: the typed event, numbers normalized.
    Typed,
}

fn members(b: &mut String, f: &Fields, m: Members) {
    let (room, user, s) = (&f.room, &f.user, &f.stream);
    let q = if m == Members::Typed { "" } else { "\"" };
    if m == Members::Typed {
        b.push_str(r#""appid":"1234567890","event":"stream_create","#);
    } else {
        let _ = write!(
            b,
            r#""event":"stream_create","appid":"1234567890","timestamp":"{}","nonce":"{}","#,
            f.secs, f.nonce
        );
        if m == Members::Body {
            let (hi, lo) = f.signature;
            let _ = write!(b, r#""signature":"{hi:032x}{lo:08x}","#);
        }
    }
    let _ = write!(
        b,
        r#""room_id":"{room}","room_session_id":"{session}","user_id":"{user}","user_name":"{user}_name","channel_id":"{room}","stream_id":"{s}","stream_sid":"{sid}","title":"{title}","stream_alias":"{s}","stream_attr":"{{\"cid\":0}}","stream_seq":{q}{seq}{q},"create_time":{q}{secs}{q},"create_time_ms":{q}{ms}{q},"extra_info":"","recreate":{q}0{q},"publish_id":"{user}","publish_name":"{user}_name","rtmp_url":["rtmp://rtmp.wsdemo.zego.im/zegodemo/{s}","rtmp://testplay.aliyun.zego.im/livestream/{s}"],"hls_url":["http://hls.wsdemo.zego.im/zegodemo/{s}/playlist.m3u8","http://testplay.aliyun.zego.im/livestream/{s}.m3u8"],"hdl_url":["http://hdl.wsdemo.zego.im/zegodemo/{s}.flv","http://testplay.aliyun.zego.im/livestream/{s}.flv"],"pic_url":["http://pic.wsdemo.zego.im/zegodemo/{s}.jpg"]"#,
        session = f.session,
        sid = f.sid,
        title = f.title,
        seq = f.seq,
        secs = f.secs,
        ms = f.ms,
    );
}

/// The envelope hookrelay stores today (src/event.rs `Envelope`), in the
/// shape a running hookrelay writes for this callback: ~2.4 KB.
fn envelope(f: &Fields, id: &str, now: i64, dedup: u128) -> String {
    let mut b = String::with_capacity(2800);
    let _ = write!(
        b,
        r#"{{"id":"{id}","received_at":"{}","provider":"zego","family":"stream","kind":"stream_create","app_id":"1234567890","event_time_ms":{},"dedup_key":"{dedup:032x}","event":{{"#,
        rfc3339(now),
        f.ms,
    );
    members(&mut b, f, Members::Typed);
    b.push_str(r#"},"raw":{"#);
    members(&mut b, f, Members::Raw);
    b.push_str("}}");
    b
}

fn rfc3339(ms: i64) -> String {
    // Right length and shape; the date does not matter here.
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("2026-01-01T{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
}
