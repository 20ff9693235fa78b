//! The relay's wire format: length-prefixed binary frames over TCP.
//!
//! A frame is a big-endian `u32` length and that many bytes. The first byte of a frame says
//! what it is; integers are big-endian, strings and values a `u32` length and their bytes.
//!
//! ```text
//! client → relay (the first and only frame of a connection)
//!   'L' prefix                       list: answered by one Listing (or Error), then closed
//!   'W' prefix from_revision         watch: answered by Events frames until an Error
//! relay → client
//!   'S' revision count (KeyValue)*   a listing
//!   'E' count (Event)*               a group of events holding whole revisions
//!   'X' kind ...                     an error; the connection ends after it
//! KeyValue: key value create_revision mod_revision version
//! Event:    'P' KeyValue | 'D' key mod_revision
//! ```

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::datastore::{KeyValue, Listing, Revision, WatchEvent};
use crate::error::{Result, StoreError};

/// The largest frame either side accepts (a listing of a very large cluster fits).
pub const MAX_FRAME: usize = 1 << 30;

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List { prefix: String },
    Watch { prefix: String, from: Revision },
}

/// What the relay answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Listing(Listing),
    Events(Vec<WatchEvent>),
    Error(StoreError),
}

fn protocol(reason: impl Into<String>) -> StoreError {
    StoreError::Backend {
        endpoints: "relay".into(),
        reason: format!("relay protocol: {}", reason.into()),
    }
}

/// Builds one frame: call the `put_*` methods, then [`Frame::finish`].
pub struct Frame(Vec<u8>);

impl Frame {
    pub fn new(tag: u8) -> Self {
        Frame(vec![0, 0, 0, 0, tag])
    }
    fn put_i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn put_bytes(&mut self, b: &[u8]) {
        self.put_u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn put_kv(&mut self, kv: &KeyValue) {
        self.put_bytes(kv.key.as_bytes());
        self.put_bytes(&kv.value);
        self.put_i64(kv.create_revision);
        self.put_i64(kv.mod_revision);
        self.put_i64(kv.version);
    }
    fn put_event(&mut self, ev: &WatchEvent) {
        match ev {
            WatchEvent::Put(kv) => {
                self.0.push(b'P');
                self.put_kv(kv);
            }
            WatchEvent::Delete { key, mod_revision } => {
                self.0.push(b'D');
                self.put_bytes(key.as_bytes());
                self.put_i64(*mod_revision);
            }
        }
    }
    /// The frame's bytes, length included.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

pub fn encode_request(r: &Request) -> Vec<u8> {
    match r {
        Request::List { prefix } => {
            let mut f = Frame::new(b'L');
            f.put_bytes(prefix.as_bytes());
            f.finish()
        }
        Request::Watch { prefix, from } => {
            let mut f = Frame::new(b'W');
            f.put_bytes(prefix.as_bytes());
            f.put_i64(*from);
            f.finish()
        }
    }
}

/// A listing frame from items in key order.
pub fn encode_listing<'a>(
    revision: Revision,
    count: usize,
    items: impl Iterator<Item = &'a KeyValue>,
) -> Vec<u8> {
    let mut f = Frame::new(b'S');
    f.put_i64(revision);
    f.put_u32(count as u32);
    for kv in items {
        f.put_kv(kv);
    }
    f.finish()
}

/// An events frame.
pub fn encode_events<'a>(count: usize, events: impl Iterator<Item = &'a WatchEvent>) -> Vec<u8> {
    let mut f = Frame::new(b'E');
    f.put_u32(count as u32);
    for ev in events {
        f.put_event(ev);
    }
    f.finish()
}

/// An error frame. Compaction and unavailability keep their kind (the syncer relists on
/// the first and retries on the second); anything else travels as its message.
pub fn encode_error(e: &StoreError) -> Vec<u8> {
    let mut f = Frame::new(b'X');
    match e {
        StoreError::Compacted {
            revision,
            requested,
        } => {
            f.0.push(b'C');
            f.put_i64(*revision);
            f.put_i64(*requested);
        }
        StoreError::Unavailable { endpoints, reason } => {
            f.0.push(b'U');
            f.put_bytes(endpoints.as_bytes());
            f.put_bytes(reason.as_bytes());
        }
        other => {
            f.0.push(b'B');
            f.put_bytes(b"relay");
            f.put_bytes(other.to_string().as_bytes());
        }
    }
    f.finish()
}

/// Reads one frame's payload; `Ok(None)` at a clean end of the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("relay frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

/// Reads a payload field by field.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(protocol("frame ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| protocol("a key that is not UTF-8"))
    }
    fn kv(&mut self) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.string()?,
            value: self.bytes()?,
            create_revision: self.i64()?,
            mod_revision: self.i64()?,
            version: self.i64()?,
        })
    }
    fn event(&mut self) -> Result<WatchEvent> {
        match self.u8()? {
            b'P' => Ok(WatchEvent::Put(self.kv()?)),
            b'D' => Ok(WatchEvent::Delete {
                key: self.string()?,
                mod_revision: self.i64()?,
            }),
            t => Err(protocol(format!("unknown event tag {t}"))),
        }
    }
    /// A count of items, each at least `min` bytes: a count the frame cannot hold is refused
    /// before anything is allocated for it.
    fn count(&mut self, min: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.0.len() {
            return Err(protocol(format!("a count of {n} in a frame too short")));
        }
        Ok(n)
    }
    fn end(&self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(protocol("trailing bytes"))
        }
    }
}

pub fn decode_request(payload: &[u8]) -> Result<Request> {
    let mut r = Reader(payload);
    let req = match r.u8()? {
        b'L' => Request::List {
            prefix: r.string()?,
        },
        b'W' => Request::Watch {
            prefix: r.string()?,
            from: r.i64()?,
        },
        t => return Err(protocol(format!("unknown request tag {t}"))),
    };
    r.end()?;
    Ok(req)
}

pub fn decode_reply(payload: &[u8]) -> Result<Reply> {
    let mut r = Reader(payload);
    let reply = match r.u8()? {
        b'S' => {
            let revision = r.i64()?;
            let n = r.count(32)?;
            let items = (0..n).map(|_| r.kv()).collect::<Result<_>>()?;
            Reply::Listing(Listing { items, revision })
        }
        b'E' => {
            let n = r.count(13)?;
            Reply::Events((0..n).map(|_| r.event()).collect::<Result<_>>()?)
        }
        b'X' => Reply::Error(match r.u8()? {
            b'C' => StoreError::Compacted {
                revision: r.i64()?,
                requested: r.i64()?,
            },
            b'U' => StoreError::Unavailable {
                endpoints: r.string()?,
                reason: r.string()?,
            },
            b'B' => StoreError::Backend {
                endpoints: r.string()?,
                reason: r.string()?,
            },
            t => return Err(protocol(format!("unknown error kind {t}"))),
        }),
        t => return Err(protocol(format!("unknown reply tag {t}"))),
    };
    r.end()?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: format!("value of {key}").into_bytes(),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
        }
    }

    fn payload(frame: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    #[test]
    fn every_message_round_trips() {
        for req in [
            Request::List {
                prefix: "/palisade/".into(),
            },
            Request::Watch {
                prefix: "/p/".into(),
                from: 42,
            },
        ] {
            assert_eq!(decode_request(payload(&encode_request(&req))).unwrap(), req);
        }
        let items = vec![kv("/a", 5), kv("/b", 7)];
        let f = encode_listing(9, items.len(), items.iter());
        assert_eq!(
            decode_reply(payload(&f)).unwrap(),
            Reply::Listing(Listing { items, revision: 9 })
        );
        let events = vec![
            WatchEvent::Put(kv("/a", 10)),
            WatchEvent::Delete {
                key: "/b".into(),
                mod_revision: 10,
            },
        ];
        let f = encode_events(events.len(), events.iter());
        assert_eq!(decode_reply(payload(&f)).unwrap(), Reply::Events(events));
        for e in [
            StoreError::Compacted {
                revision: 5,
                requested: 3,
            },
            StoreError::Unavailable {
                endpoints: "etcd 127.0.0.1:1".into(),
                reason: "down".into(),
            },
        ] {
            assert_eq!(
                decode_reply(payload(&encode_error(&e))).unwrap(),
                Reply::Error(e)
            );
        }
        match decode_reply(payload(&encode_error(&StoreError::Config("x".into())))).unwrap() {
            Reply::Error(StoreError::Backend { reason, .. }) => assert!(reason.contains('x')),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn damaged_frames_are_refused() {
        let items = [kv("/a", 5)];
        let f = encode_listing(9, 1, items.iter());
        let p = payload(&f);
        assert!(decode_reply(&p[..p.len() - 1]).is_err());
        let mut longer = p.to_vec();
        longer.push(0);
        assert!(decode_reply(&longer).is_err());
        // A count far larger than the frame allocates nothing and fails.
        let mut huge = vec![b'S'];
        huge.extend_from_slice(&9i64.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_reply(&huge).is_err());
        assert!(decode_request(b"Q").is_err());
    }
}
