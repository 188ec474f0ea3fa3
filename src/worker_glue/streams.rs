//! Moving bodies between R2, clients and upstreams as JS streams, so the bytes
//! never pass through wasm (no copies, no CPU time per byte in the isolate).

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use super::blobs::PutError;
use worker::*;

fn js(e: wasm_bindgen::JsValue) -> Error {
    Error::from(e)
}

/// A stream that R2 accepts for `put`: it must announce its length, so the
/// bytes go through a FixedLengthStream (which also fails a body that turns out
/// shorter or longer than `length`).
pub struct Fixed {
    pub readable: web_sys::ReadableStream,
    pub writable: web_sys::WritableStream,
}

pub fn fixed(length: u64) -> Result<Fixed> {
    let stream = worker::worker_sys::FixedLengthStream::new_big_int(js_sys::BigInt::from(length)).map_err(js)?;
    let transform: &web_sys::TransformStream = stream.unchecked_ref();
    Ok(Fixed { readable: transform.readable(), writable: transform.writable() })
}

/// Pipes `source` into `destination`, leaving it open for more when `more`.
pub async fn pipe(source: &web_sys::ReadableStream, destination: &web_sys::WritableStream, more: bool) -> Result<()> {
    let options = web_sys::StreamPipeOptions::new();
    options.set_prevent_close(more);
    JsFuture::from(source.pipe_to_with_options(destination, &options)).await.map_err(js)?;
    Ok(())
}

/// The body of an R2 object as a JS stream.
pub async fn r2_stream(bucket: &Bucket, key: &str) -> Result<Option<web_sys::ReadableStream>> {
    let Some(object) = bucket.get(key).execute().await? else { return Ok(None) };
    let body = object.body().ok_or_else(|| Error::RustError(format!("{key} has no body")))?;
    match body.response_body()? {
        ResponseBody::Stream(s) => Ok(Some(s)),
        _ => Err(Error::RustError(format!("{key} is not a stream"))),
    }
}

/// Stores the concatenation of the R2 objects `parts` (in order, `total` bytes
/// in all) under `key`; R2 checks the result against `sha256`. The bytes flow
/// from R2 to R2 through one FixedLengthStream.
pub async fn concatenate(bucket: &Bucket, parts: &[String], total: u64, key: &str, sha256: &str) -> std::result::Result<(), PutError> {
    let failed = |e: Error| PutError::Failed(e.to_string());
    let Fixed { readable, writable } = fixed(total).map_err(failed)?;
    let put = super::blobs::put_checked(bucket, key, sha256, Data::ReadableStream(readable));
    let feed = async {
        for part in parts {
            let source = match r2_stream(bucket, part).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    let _ = JsFuture::from(writable.abort()).await;
                    return Err(Error::RustError(format!("upload part {part} is missing")));
                }
                Err(e) => {
                    let _ = JsFuture::from(writable.abort()).await;
                    return Err(e);
                }
            };
            // A failing pipe aborts the destination, which fails the put too.
            pipe(&source, &writable, true).await?;
        }
        JsFuture::from(writable.close()).await.map_err(js)?;
        Ok(())
    };
    let (stored, fed) = futures_util::future::join(put, feed).await;
    fed.map_err(failed)?;
    stored?;
    Ok(())
}

/// The size of the pieces [`put_unsized`] hashes at a time: the body's chunks
/// (16 KiB or so) are gathered into pieces this large by the runtime, not in
/// wasm, so hashing costs a promise round trip per MiB, not per chunk.
const PIECE: u32 = 1 << 20;

/// How long [`copy_to_both`] waits for more chunks before it writes what it
/// has gathered: a slow source's bytes go out at most this late.
const GATHER_MS: u64 = 5;

/// Copies `source` into two destinations in lockstep. Chunks are gathered
/// (by the runtime, not in wasm) into pieces of up to [`PIECE`] bytes, and a
/// piece is written to both once it is full, the source has ended, or
/// [`GATHER_MS`] have passed since its first chunk; one piece is written
/// while the next is gathered. A fast source goes out in pieces (a few
/// promise round trips per MiB instead of per 16 KiB chunk: measured
/// locally, a cold 256 MiB pull through the mirror took 13.6–16.5 s writing
/// each chunk as it came and 7.3 s in 1 MiB pieces), a slow one as it comes.
/// Reading stops while a full piece waits, so memory stays at two pieces
/// whatever either side's speed (a tee would queue everything the slower side
/// has not read). A destination that fails (a client that went away) is
/// dropped and the copy goes on for the other. Returns how each fared.
pub async fn copy_to_both(source: web_sys::ReadableStream, a: &web_sys::WritableStream, b: &web_sys::WritableStream) -> (Result<()>, Result<()>) {
    use futures_util::future::{poll_fn, LocalBoxFuture};
    use futures_util::FutureExt;
    use std::task::Poll;
    enum Event {
        Read(std::result::Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue>),
        Wrote(Result<()>, Result<()>),
        Waited,
    }
    let reader: web_sys::ReadableStreamDefaultReader = source.get_reader().unchecked_into();
    let writers = (a.get_writer(), b.get_writer());
    let (wa, wb) = match writers {
        (Ok(wa), Ok(wb)) => (wa, wb),
        _ => return (Err(Error::RustError("a destination is locked".into())), Err(Error::RustError("a destination is locked".into()))),
    };
    let (mut ra, mut rb): (Result<()>, Result<()>) = (Ok(()), Ok(()));
    let write_both = |piece: js_sys::Uint8Array, a_on: bool, b_on: bool| -> LocalBoxFuture<'static, (Result<()>, Result<()>)> {
        let (wa, wb) = (wa.clone(), wb.clone());
        async move {
            let to_a = async {
                if a_on {
                    JsFuture::from(wa.write_with_chunk(&piece)).await.map(|_| ()).map_err(js)
                } else {
                    Ok(())
                }
            };
            let to_b = async {
                if b_on {
                    JsFuture::from(wb.write_with_chunk(&piece)).await.map(|_| ()).map_err(js)
                } else {
                    Ok(())
                }
            };
            futures_util::future::join(to_a, to_b).await
        }
        .boxed_local()
    };
    let mut gathered = Gathered::new();
    let mut reading: Option<JsFuture> = None;
    let mut writing: Option<LocalBoxFuture<'static, (Result<()>, Result<()>)>> = None;
    let mut waiting: Option<worker::Delay> = None;
    let mut waited = false;
    let mut done = false;
    loop {
        if writing.is_none() && gathered.len > 0 && (gathered.len >= PIECE || done || waited) {
            writing = Some(write_both(gathered.take().expect("gathered bytes"), ra.is_ok(), rb.is_ok()));
            (waiting, waited) = (None, false);
        }
        if gathered.len > 0 && waiting.is_none() && !waited {
            waiting = Some(worker::Delay::from(std::time::Duration::from_millis(GATHER_MS)));
        }
        if reading.is_none() && !done && gathered.len < PIECE {
            reading = Some(JsFuture::from(reader.read()));
        }
        if reading.is_none() && writing.is_none() && gathered.len == 0 {
            break;
        }
        let event = poll_fn(|cx| {
            if let Some(r) = reading.as_mut() {
                if let Poll::Ready(v) = r.poll_unpin(cx) {
                    reading = None;
                    return Poll::Ready(Event::Read(v));
                }
            }
            if let Some(w) = writing.as_mut() {
                if let Poll::Ready((x, y)) = w.poll_unpin(cx) {
                    writing = None;
                    return Poll::Ready(Event::Wrote(x, y));
                }
            }
            if let Some(t) = waiting.as_mut() {
                if t.poll_unpin(cx).is_ready() {
                    waiting = None;
                    return Poll::Ready(Event::Waited);
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Read(Ok(step)) => {
                if js_sys::Reflect::get(&step, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
                    done = true;
                } else {
                    match js_sys::Reflect::get(&step, &"value".into()).ok().and_then(|v| v.dyn_into::<js_sys::Uint8Array>().ok()) {
                        Some(chunk) => gathered.add(chunk),
                        None => {
                            let _ = JsFuture::from(reader.cancel()).await;
                            let _ = JsFuture::from(wa.abort()).await;
                            let _ = JsFuture::from(wb.abort()).await;
                            let e = || Error::RustError("the source sent something other than bytes".into());
                            return (Err(e()), Err(e()));
                        }
                    }
                }
            }
            Event::Read(Err(e)) => {
                // The source failed: neither destination gets a whole copy.
                if let Some(w) = writing.take() {
                    let _ = w.await;
                }
                let _ = JsFuture::from(wa.abort()).await;
                let _ = JsFuture::from(wb.abort()).await;
                let e = js(e);
                return (Err(Error::RustError(e.to_string())), Err(e));
            }
            Event::Wrote(x, y) => {
                if ra.is_ok() {
                    ra = x;
                }
                if rb.is_ok() {
                    rb = y;
                }
                if ra.is_err() && rb.is_err() {
                    let _ = JsFuture::from(reader.cancel()).await;
                    return (ra, rb);
                }
            }
            Event::Waited => waited = true,
        }
    }
    for (w, r) in [(&wa, &mut ra), (&wb, &mut rb)] {
        if r.is_ok() {
            *r = JsFuture::from(w.close()).await.map(|_| ()).map_err(js);
        } else {
            let _ = JsFuture::from(w.abort()).await;
        }
    }
    (ra, rb)
}

/// Chunks read from a stream, gathered into one piece by the runtime (the
/// bytes are copied from array to array in JS, never into wasm).
struct Gathered {
    chunks: Vec<js_sys::Uint8Array>,
    len: u32,
}

impl Gathered {
    fn new() -> Gathered {
        Gathered { chunks: Vec::new(), len: 0 }
    }

    fn add(&mut self, chunk: js_sys::Uint8Array) {
        if chunk.length() > 0 {
            self.len = self.len.saturating_add(chunk.length());
            self.chunks.push(chunk);
        }
    }

    /// Adds `chunk` up to `size` gathered bytes; returns what did not fit
    /// (a view of the chunk's rest, no copy), if anything.
    fn add_up_to(&mut self, chunk: js_sys::Uint8Array, size: u32) -> Option<js_sys::Uint8Array> {
        let room = size.saturating_sub(self.len);
        if chunk.length() <= room {
            self.add(chunk);
            return None;
        }
        self.add(chunk.subarray(0, room));
        Some(chunk.subarray(room, chunk.length()))
    }

    /// The gathered bytes as one array (a single chunk as it came), or None.
    fn take(&mut self) -> Option<js_sys::Uint8Array> {
        let chunks = std::mem::take(&mut self.chunks);
        let len = std::mem::replace(&mut self.len, 0);
        match chunks.len() {
            0 => None,
            1 => chunks.into_iter().next(),
            _ => {
                let piece = js_sys::Uint8Array::new_with_length(len);
                let mut at = 0;
                for c in chunks {
                    piece.set(&c, at);
                    at += c.length();
                }
                Some(piece)
            }
        }
    }
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// The runtime's `crypto.DigestStream`: a WritableStream that hashes what
    /// is written to it (in the runtime, not in wasm).
    #[wasm_bindgen(extends = web_sys::WritableStream, js_namespace = crypto)]
    type DigestStream;
    #[wasm_bindgen(constructor, js_namespace = crypto)]
    fn new(algorithm: &str) -> DigestStream;
    #[wasm_bindgen(method, getter)]
    fn digest(this: &DigestStream) -> js_sys::Promise;
}

/// Stores `body` (`length` bytes) in R2 under `key` while the runtime
/// computes its sha256: the body is copied in lockstep to R2 through a
/// FixedLengthStream (a body shorter or longer than `length` fails the put)
/// and into a DigestStream, so memory stays at a piece or two whatever R2's
/// speed (a tee would queue what R2 has not taken yet). No byte passes
/// through wasm. Returns the sha256 (hex).
pub async fn put_hashing(bucket: &Bucket, key: &str, body: web_sys::ReadableStream, length: u64) -> Result<String> {
    let Fixed { readable, writable } = fixed(length)?;
    let digest = DigestStream::new("SHA-256");
    let put = bucket.put(key, Data::ReadableStream(readable)).execute();
    let copy = copy_to_both(body, &writable, &digest);
    let (stored, (to_store, to_hash)) = futures_util::future::join(put, copy).await;
    to_store?;
    stored?;
    to_hash?;
    digest_hex(&digest).await
}

async fn digest_hex(digest: &DigestStream) -> Result<String> {
    let value = JsFuture::from(digest.digest()).await.map_err(js)?;
    Ok(hex::encode(js_sys::Uint8Array::new(&value).to_vec()))
}

/// Why [`put_unsized`] stopped.
pub enum UnsizedError {
    /// The body is longer than the limit given.
    TooLong,
    Failed(Error),
}

impl From<Error> for UnsizedError {
    fn from(e: Error) -> Self {
        UnsizedError::Failed(e)
    }
}

/// Stores a body of unknown length in R2 under `key` as a multipart upload of
/// `part`-byte parts (R2 wants parts of one size but the last), hashing it in
/// the runtime's DigestStream on the way; the parts are cut and gathered by
/// the runtime, so no byte passes through wasm. A part uploads while the next
/// is read, so at most two are held. Returns the length and sha256 (hex);
/// nothing is stored for an empty body or when it fails (the multipart
/// upload is aborted).
pub async fn put_unsized(bucket: &Bucket, key: &str, body: Option<web_sys::ReadableStream>, part: u32, max: u64) -> std::result::Result<(u64, String), UnsizedError> {
    let digest = DigestStream::new("SHA-256");
    let hasher = digest.get_writer().map_err(js)?;
    let Some(body) = body else {
        JsFuture::from(hasher.close()).await.map_err(js)?;
        return Ok((0, digest_hex(&digest).await?));
    };
    let upload = bucket.create_multipart_upload(key).execute().await?;
    let mut cutter = Cutter {
        reader: body.get_reader().unchecked_into(),
        hasher: &hasher,
        read: Gathered::new(),
        hashed: std::collections::VecDeque::new(),
        part: Gathered::new(),
        size: part,
        total: 0,
        max,
        done: false,
    };
    let mut parts = Vec::new();
    let result: std::result::Result<(), UnsizedError> = async {
        let mut pending: Option<js_sys::Uint8Array> = None;
        loop {
            let number = parts.len() as u16 + 1;
            let send = async {
                match &pending {
                    Some(p) => upload_piece(&upload, number, p).await.map(Some),
                    None => Ok(None),
                }
            };
            let (sent, next) = futures_util::future::join(send, cutter.next_part()).await;
            if let Some(p) = sent? {
                parts.push(p);
            }
            pending = next?;
            if pending.is_none() {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = JsFuture::from(cutter.reader.cancel()).await;
        let _ = JsFuture::from(hasher.abort()).await;
        let _ = upload.abort().await;
        return Err(e);
    }
    JsFuture::from(hasher.close()).await.map_err(js)?;
    let sha = digest_hex(&digest).await?;
    if parts.is_empty() {
        let _ = upload.abort().await;
        return Ok((0, sha));
    }
    upload.complete(parts).await?;
    Ok((cutter.total, sha))
}

/// Reads a body and cuts it into parts of `size` bytes, writing it to the
/// hasher in pieces of about [`PIECE`] bytes as it goes.
struct Cutter<'a> {
    reader: web_sys::ReadableStreamDefaultReader,
    hasher: &'a web_sys::WritableStreamDefaultWriter,
    /// Read, not hashed yet.
    read: Gathered,
    /// Hashed, not in a part yet.
    hashed: std::collections::VecDeque<js_sys::Uint8Array>,
    part: Gathered,
    size: u32,
    total: u64,
    max: u64,
    done: bool,
}

impl Cutter<'_> {
    /// The next whole part (the last one may be shorter), or None at the end.
    async fn next_part(&mut self) -> std::result::Result<Option<js_sys::Uint8Array>, UnsizedError> {
        loop {
            while self.part.len < self.size {
                let Some(bytes) = self.hashed.pop_front() else { break };
                if let Some(rest) = self.part.add_up_to(bytes, self.size) {
                    self.hashed.push_front(rest);
                }
            }
            if self.part.len >= self.size || self.done {
                return Ok(self.part.take());
            }
            while self.read.len < PIECE {
                let step = JsFuture::from(self.reader.read()).await.map_err(js)?;
                if js_sys::Reflect::get(&step, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
                    self.done = true;
                    break;
                }
                let value = js_sys::Reflect::get(&step, &"value".into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
                let chunk: js_sys::Uint8Array = value.dyn_into().map_err(|_| Error::RustError("the body sent something other than bytes".into()))?;
                self.total += chunk.length() as u64;
                if self.total > self.max {
                    return Err(UnsizedError::TooLong);
                }
                self.read.add(chunk);
            }
            if let Some(piece) = self.read.take() {
                JsFuture::from(self.hasher.write_with_chunk(&piece)).await.map_err(js)?;
                self.hashed.push_back(piece);
            }
        }
    }
}

/// One part of a multipart upload from an array the runtime holds.
async fn upload_piece(upload: &worker::MultipartUpload, number: u16, piece: &js_sys::Uint8Array) -> Result<worker::UploadedPart> {
    let Fixed { readable, writable } = fixed(piece.length() as u64)?;
    let writer = writable.get_writer().map_err(js)?;
    let write = async {
        JsFuture::from(writer.write_with_chunk(piece)).await.map_err(js)?;
        JsFuture::from(writer.close()).await.map_err(js)?;
        Ok::<(), Error>(())
    };
    let (uploaded, written) = futures_util::future::join(upload.upload_part(number, Data::ReadableStream(readable)), write).await;
    written?;
    uploaded
}

/// The next chunk a reader gives (None at the end of the stream).
pub async fn next_chunk(reader: &web_sys::ReadableStreamDefaultReader) -> Result<Option<js_sys::Uint8Array>> {
    let step = JsFuture::from(reader.read()).await.map_err(js)?;
    if js_sys::Reflect::get(&step, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
        return Ok(None);
    }
    let value = js_sys::Reflect::get(&step, &"value".into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
    value.dyn_into().map(Some).map_err(|_| Error::RustError("the body sent something other than bytes".into()))
}
