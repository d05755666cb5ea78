//! The executor's binary framing on its unix socket (protocol.md 4.7).
//!
//! All integers are big-endian; a `field` is a `u32` length and that many
//! bytes. A request is `u32 total` followed by `total` bytes:
//! `field(reqid) field(dispatcher_id) field(script_name) field(stdin)
//! u32 argc argc×field(arg)`. A response is `i32 exit field(stdout)
//! field(stderr)`, optionally followed by an additive trailer `u32 flags`
//! ([`FLAG_STDOUT_TRUNCATED`], [`FLAG_STDERR_TRUNCATED`],
//! [`FLAG_TIMED_OUT`], the signal at [`FLAG_SIGNAL_SHIFT`]) that the original neither sends nor reads.
//!
//! Every length is checked against what remains before anything is
//! allocated, so a hostile length cannot make the reader reserve memory it
//! was never sent. Everything is bytes; conversion to text is the caller's
//! (lossy UTF-8, once).

use std::fmt;

/// Largest request body (`total`) accepted, in bytes: the original's limit
/// (16 MiB), well above a run's stdin and args.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Most arguments one request may carry: the original's limit.
pub const MAX_ARGS: usize = 256;

/// Trailer bit: stdout was cut at the output cap.
pub const FLAG_STDOUT_TRUNCATED: u32 = 1;
/// Trailer bit: stderr was cut at the output cap.
pub const FLAG_STDERR_TRUNCATED: u32 = 2;
/// Trailer bit: the script was killed at its timeout.
pub const FLAG_TIMED_OUT: u32 = 4;
/// Trailer bits 8-15: the signal that killed the script (0: none). The
/// exit code is then `128 + signal`, as a shell reports it.
pub const FLAG_SIGNAL_SHIFT: u32 = 8;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// `total` is zero or above [`MAX_REQUEST_BYTES`].
    Size(usize),
    /// A length runs past the end of the frame; names what was being read.
    Truncated(&'static str),
    /// `argc` is above [`MAX_ARGS`].
    TooManyArgs(u32),
    /// Bytes are left over after the last field.
    Trailing(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Size(n) => {
                write!(f, "frame size {n} outside 1..={MAX_REQUEST_BYTES} bytes")
            }
            FrameError::Truncated(what) => write!(f, "frame truncated in {what}"),
            FrameError::TooManyArgs(n) => write!(f, "argc {n} above {MAX_ARGS}"),
            FrameError::Trailing(n) => write!(f, "{n} stray bytes after the last field"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One run asked of the executor. The script is named, never given by path:
/// the executor resolves the name from its own configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    /// The run's request id.
    pub reqid: Vec<u8>,
    /// The requesting controller's id.
    pub dispatcher_id: Vec<u8>,
    /// The allowlisted script name.
    pub script: Vec<u8>,
    /// The bytes given to the script on stdin.
    pub stdin: Vec<u8>,
    /// The script's arguments.
    pub args: Vec<Vec<u8>>,
}

/// The executor's answer to one [`ExecRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResponse {
    /// The script's exit code, or -1 / 126 / 127 for the executor's own refusals.
    pub exit: i32,
    /// The script's stdout (capped).
    pub stdout: Vec<u8>,
    /// The script's stderr (capped), or the executor's error message.
    pub stderr: Vec<u8>,
    /// The trailer flags, `None` when the peer sent no trailer.
    pub flags: Option<u32>,
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over a frame that checks every length against what remains.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        if self.rest.len() < 4 {
            return Err(FrameError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(4);
        self.rest = tail;
        Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
    }

    fn field(&mut self, what: &'static str) -> Result<&'a [u8], FrameError> {
        let len = self.u32(what)? as usize;
        if len > self.rest.len() {
            return Err(FrameError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }
}

impl ExecRequest {
    /// The whole frame, `total` prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_field(&mut body, &self.reqid);
        put_field(&mut body, &self.dispatcher_id);
        put_field(&mut body, &self.script);
        put_field(&mut body, &self.stdin);
        body.extend_from_slice(&(self.args.len() as u32).to_be_bytes());
        for a in &self.args {
            put_field(&mut body, a);
        }
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Checks the 4-byte `total` prefix; the body length to read next.
    pub fn total(prefix: [u8; 4]) -> Result<usize, FrameError> {
        let total = u32::from_be_bytes(prefix) as usize;
        if total == 0 || total > MAX_REQUEST_BYTES {
            return Err(FrameError::Size(total));
        }
        Ok(total)
    }

    /// Parses the body that followed the `total` prefix (exactly `total` bytes).
    pub fn decode_body(body: &[u8]) -> Result<ExecRequest, FrameError> {
        if body.is_empty() || body.len() > MAX_REQUEST_BYTES {
            return Err(FrameError::Size(body.len()));
        }
        let mut c = Cursor { rest: body };
        let reqid = c.field("reqid")?.to_vec();
        let dispatcher_id = c.field("dispatcher_id")?.to_vec();
        let script = c.field("script_name")?.to_vec();
        let stdin = c.field("stdin")?.to_vec();
        let argc = c.u32("argc")?;
        if argc as usize > MAX_ARGS {
            return Err(FrameError::TooManyArgs(argc));
        }
        let mut args = Vec::with_capacity(argc as usize);
        for _ in 0..argc {
            args.push(c.field("arg")?.to_vec());
        }
        if !c.rest.is_empty() {
            return Err(FrameError::Trailing(c.rest.len()));
        }
        Ok(ExecRequest {
            reqid,
            dispatcher_id,
            script,
            stdin,
            args,
        })
    }

    /// Parses a whole frame, `total` prefix included.
    pub fn decode(frame: &[u8]) -> Result<ExecRequest, FrameError> {
        if frame.len() < 4 {
            return Err(FrameError::Truncated("total"));
        }
        let total = Self::total([frame[0], frame[1], frame[2], frame[3]])?;
        let body = &frame[4..];
        if body.len() < total {
            return Err(FrameError::Truncated("body"));
        }
        if body.len() > total {
            return Err(FrameError::Trailing(body.len() - total));
        }
        Self::decode_body(body)
    }
}

impl ExecResponse {
    /// The response bytes; the trailer is written when `flags` is set.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.stdout.len() + self.stderr.len() + 16);
        out.extend_from_slice(&self.exit.to_be_bytes());
        put_field(&mut out, &self.stdout);
        put_field(&mut out, &self.stderr);
        if let Some(flags) = self.flags {
            out.extend_from_slice(&flags.to_be_bytes());
        }
        out
    }

    /// Parses a response read to end of stream. A trailer is read when
    /// exactly four bytes follow stderr; anything else after it is refused.
    pub fn decode(bytes: &[u8]) -> Result<ExecResponse, FrameError> {
        let mut c = Cursor { rest: bytes };
        let exit = c.u32("exit")? as i32;
        let stdout = c.field("stdout")?.to_vec();
        let stderr = c.field("stderr")?.to_vec();
        let flags = match c.rest.len() {
            0 => None,
            4 => Some(c.u32("flags")?),
            n => return Err(FrameError::Trailing(n)),
        };
        Ok(ExecResponse {
            exit,
            stdout,
            stderr,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ExecRequest {
        ExecRequest {
            reqid: b"r-1".to_vec(),
            dispatcher_id: b"ctl-1".to_vec(),
            script: b"hello".to_vec(),
            stdin: "{\"x\":\"é\"}".as_bytes().to_vec(),
            args: vec![b"a".to_vec(), Vec::new(), "ü".as_bytes().to_vec()],
        }
    }

    #[test]
    fn request_round_trips_with_byte_lengths() {
        let r = sample();
        let frame = r.encode();
        // Lengths count bytes, not characters: "ü" is a 2-byte field.
        assert_eq!(&frame[frame.len() - 6..], &[0, 0, 0, 2, 0xc3, 0xbc]);
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        assert_eq!(ExecRequest::decode(&frame).unwrap(), r);
    }

    #[test]
    fn request_sizes_outside_the_limit_are_refused() {
        assert_eq!(ExecRequest::total([0; 4]), Err(FrameError::Size(0)));
        let huge = (MAX_REQUEST_BYTES as u32 + 1).to_be_bytes();
        assert_eq!(
            ExecRequest::total(huge),
            Err(FrameError::Size(MAX_REQUEST_BYTES + 1))
        );
        assert_eq!(
            ExecRequest::total(u32::MAX.to_be_bytes()),
            Err(FrameError::Size(u32::MAX as usize))
        );
        assert_eq!(
            ExecRequest::total((MAX_REQUEST_BYTES as u32).to_be_bytes()),
            Ok(MAX_REQUEST_BYTES)
        );
    }

    #[test]
    fn every_truncation_of_a_request_is_refused() {
        let frame = sample().encode();
        for cut in 0..frame.len() {
            assert!(
                ExecRequest::decode(&frame[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
        // Body cut with a total rewritten to match: a field length overruns.
        let body = &frame[4..];
        for cut in 1..body.len() {
            assert!(ExecRequest::decode_body(&body[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn a_field_length_past_the_end_is_refused_without_allocating() {
        let mut body = Vec::new();
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(
            ExecRequest::decode_body(&body),
            Err(FrameError::Truncated("reqid"))
        );
    }

    #[test]
    fn argc_above_the_limit_and_trailing_bytes_are_refused() {
        let mut r = sample();
        r.args.clear();
        let mut body = r.encode()[4..].to_vec();
        let n = body.len();
        body[n - 4..].copy_from_slice(&9999u32.to_be_bytes());
        assert_eq!(
            ExecRequest::decode_body(&body),
            Err(FrameError::TooManyArgs(9999))
        );
        r.args = vec![Vec::new(); MAX_ARGS];
        assert_eq!(ExecRequest::decode(&r.encode()).unwrap().args.len(), 256);
        r.args.push(Vec::new());
        assert_eq!(
            ExecRequest::decode(&r.encode()),
            Err(FrameError::TooManyArgs(257))
        );
        let mut body = sample().encode()[4..].to_vec();
        body.push(0);
        assert_eq!(
            ExecRequest::decode_body(&body),
            Err(FrameError::Trailing(1))
        );
    }

    #[test]
    fn responses_round_trip_with_and_without_the_trailer() {
        let mut r = ExecResponse {
            exit: -1,
            stdout: b"out\xff".to_vec(),
            stderr: b"executor: malformed request".to_vec(),
            flags: None,
        };
        let bytes = r.encode();
        assert_eq!(&bytes[..4], &[0xff; 4]);
        assert_eq!(ExecResponse::decode(&bytes).unwrap(), r);
        r.flags = Some(FLAG_STDOUT_TRUNCATED | FLAG_TIMED_OUT);
        assert_eq!(ExecResponse::decode(&r.encode()).unwrap(), r);
        let mut odd = r.encode();
        odd.push(0);
        assert_eq!(ExecResponse::decode(&odd), Err(FrameError::Trailing(5)));
        let full = r.encode();
        for cut in 0..full.len() - 4 {
            assert!(ExecResponse::decode(&full[..cut]).is_err(), "{cut}");
        }
    }
}
