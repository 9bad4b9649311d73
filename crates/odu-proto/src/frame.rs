//! The line codec: `base64(json) + "\n"`.

/// A decoded frame larger than this closes the link.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The longest line a reader must accept: the base64 form of the largest frame.
pub const MAX_LINE_BYTES: usize = MAX_FRAME_BYTES.div_ceil(3) * 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("line is not base64 ({len} bytes starting {preview:?})")]
    NotBase64 { len: usize, preview: String },
    #[error("frame of {0} bytes exceeds the 16 MiB limit")]
    TooLarge(usize),
}

/// Appends one frame for `json` to `out`.
pub fn encode_frame(json: &[u8], out: &mut Vec<u8>) {
    base64_simd::STANDARD.encode_append(json, out);
    out.push(b'\n');
}

/// Decodes one line (without or with its trailing newline and surrounding whitespace).
/// Returns `Ok(None)` for a blank line, which is ignored on the wire.
pub fn decode_line(line: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(FrameError::TooLarge(line.len() / 4 * 3));
    }
    base64_simd::STANDARD.decode_to_vec(line).map(Some).map_err(|_| FrameError::NotBase64 {
        len: line.len(),
        preview: String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_banners_are_rejected() {
        let mut out = Vec::new();
        encode_frame(br#"{"jsonrpc":"2.0"}"#, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(decode_line(&out).unwrap().unwrap(), br#"{"jsonrpc":"2.0"}"#);
        assert_eq!(decode_line(b"  \n").unwrap(), None);
        assert!(matches!(decode_line(b"Welcome to host!\n"), Err(FrameError::NotBase64 { .. })));
    }
}
