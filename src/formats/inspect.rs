//! Inspecting an upload without I/O: a format's inspector is a state machine
//! that asks for the bytes it needs — a small range whole (a header, a
//! control member) or a long range streamed past it chunk by chunk (a data
//! member, a chart archive) — and ends with the member record or the reason
//! the upload is refused. The glue answers from R2 (never holding a package
//! whole); [`in_memory`] answers from a slice, so native tests and fuzzing
//! run the very sequence the worker runs.

/// What an inspection asks for next.
#[derive(Debug, PartialEq, Eq)]
pub enum Need<M> {
    /// `len` bytes at `offset`, whole, passed to the next [`Inspector::step`].
    /// The range lies within the upload.
    Bytes { offset: u64, len: u64 },
    /// `len` bytes at `offset`, pushed through [`Inspector::push`] in chunks of
    /// any size; then [`Inspector::step`] is called with `None`.
    Stream { offset: u64, len: u64 },
    /// The verdict: the upload is accepted as this member.
    Done(M),
}

/// A format's inspection of one upload of a known size.
pub trait Inspector {
    type Member;
    /// The next need, given the bytes of the last [`Need::Bytes`] (`None` at
    /// the start and after a stream). `Err` refuses the upload with a reason.
    fn step(&mut self, given: Option<Vec<u8>>) -> Result<Need<Self::Member>, String>;
    /// A chunk of the range a [`Need::Stream`] asked for, in order. An error
    /// stops the stream and refuses the upload.
    fn push(&mut self, chunk: &[u8]) -> Result<(), String>;
}

/// How the errors of [`in_memory`] that are an inspector's defect (not the
/// upload's) begin; fuzzing fails on them.
pub const DEFECT: &str = "inspection defect: ";

/// Runs an inspector over an upload held in memory (tests, tools, fuzzing),
/// streaming in chunks of `chunk` bytes.
pub fn in_memory<I: Inspector>(mut inspector: I, data: &[u8], chunk: usize) -> Result<I::Member, String> {
    let range = |offset: u64, len: u64| -> Result<&[u8], String> {
        let start = usize::try_from(offset).ok().filter(|&s| s <= data.len());
        let end = start.and_then(|s| s.checked_add(usize::try_from(len).ok()?)).filter(|&e| e <= data.len());
        match (start, end) {
            (Some(s), Some(e)) => Ok(&data[s..e]),
            _ => Err(format!("{DEFECT}the inspector asked for {len} bytes at {offset} of a {}-byte upload", data.len())),
        }
    };
    let mut given = None;
    // Bounded: no inspector needs more than a handful of steps.
    for _ in 0..64 {
        match inspector.step(given.take())? {
            Need::Bytes { offset, len } => given = Some(range(offset, len)?.to_vec()),
            Need::Stream { offset, len } => {
                for piece in range(offset, len)?.chunks(chunk.max(1)) {
                    inspector.push(piece)?;
                }
            }
            Need::Done(member) => return Ok(member),
        }
    }
    Err(format!("{DEFECT}the inspector did not finish"))
}

/// The bytes a [`Need::Bytes`] answered, or the error of an inspector that
/// got none where it asked for some (a defect, not an input error).
pub fn given(bytes: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
    bytes.ok_or_else(|| "the inspection was not given the bytes it asked for".to_string())
}

impl<I: Inspector + ?Sized> Inspector for &mut I {
    type Member = I::Member;
    fn step(&mut self, given: Option<Vec<u8>>) -> Result<Need<I::Member>, String> {
        (**self).step(given)
    }
    fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        (**self).push(chunk)
    }
}
