//! A batch's tar stream, cut anywhere: files come out whole and bounded, or
//! the stream is refused with a reason, never a panic; the same bytes cut
//! differently give the same files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wharf::formats::batch::Splitter;

fn split(data: &[u8], piece: usize) -> Result<Vec<(String, usize)>, String> {
    let mut s = Splitter::new(4096);
    let mut out = Vec::new();
    for c in data.chunks(piece.max(1)) {
        out.extend(s.push(c)?.into_iter().map(|f| (f.name, f.data.len())));
    }
    s.finish()?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let whole = split(rest, rest.len());
    let cut_up = split(rest, cut as usize + 1);
    if let Ok(files) = &whole {
        assert!(files.iter().all(|(_, n)| *n <= 4096));
    }
    assert_eq!(whole.is_ok(), cut_up.is_ok(), "the cut does not decide acceptance");
    if let (Ok(a), Ok(b)) = (whole, cut_up) {
        assert_eq!(a, b);
    }
});
