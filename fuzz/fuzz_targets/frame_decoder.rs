//! Any bytes on a line: decoding never panics, and whatever decodes to a message re-encodes to
//! a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odu_proto::{Message, decode_line};

fuzz_target!(|line: &[u8]| {
    if let Ok(Some(bytes)) = decode_line(line) {
        if let Ok(message) = Message::parse(&bytes) {
            let frame = message.to_frame();
            let again = decode_line(&frame).expect("our frames decode").expect("not blank");
            assert_eq!(Message::parse(&again).expect("our messages parse"), message);
        }
    }
});
