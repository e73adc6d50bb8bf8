//! The head-then-body loop shared by [`RequestParser`](crate::RequestParser) and
//! [`ResponseParser`](crate::ResponseParser): both buffer one bounded head, hand it to a
//! message-specific head parser, then stream the body through the same decoder. Only the
//! head parsing and the end-of-stream rules differ, so only those live in each parser.

use crate::body::{BodyDecoder, Framing, Sink};
use crate::head::HeadBuffer;
use crate::{HttpError, Limits};

/// A message whose body the framer fills in.
pub(crate) trait Message {
    /// Where the decoded body bytes go.
    fn sink(&mut self) -> Sink<'_>;
}

#[derive(Debug)]
pub(crate) enum Phase<M> {
    Head,
    Body(M),
    Failed(HttpError),
}

/// Phase, head buffer and body decoder of one connection's incoming messages.
#[derive(Debug)]
pub(crate) struct Framer<M> {
    pub(crate) limits: Limits,
    pub(crate) phase: Phase<M>,
    pub(crate) head: HeadBuffer,
    pub(crate) body: BodyDecoder,
    /// The message whose body ran past `body_bytes_max` (the last error), with its head
    /// and the body bytes captured until then, until taken or reset.
    pub(crate) oversized: Option<M>,
}

impl<M: Message> Framer<M> {
    pub(crate) fn new(limits: Limits) -> Self {
        Framer {
            limits,
            phase: Phase::Head,
            head: HeadBuffer::default(),
            body: BodyDecoder::default(),
            oversized: None,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.oversized = None;
        self.phase = Phase::Head;
        self.head.clear();
        self.body.start(Framing::Empty);
    }

    /// No byte of a message seen since the last one completed.
    pub(crate) fn is_between_messages(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.head.is_empty()
    }

    /// Feeds bytes. `parse_head` sees the buffered head each time it may be complete
    /// (it ends in a blank line) and returns `Ok(None)` for "not a final message yet";
    /// it may clear the buffer to skip an interim message. Errors are sticky until
    /// [`reset`](Self::reset).
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        parse_head: impl FnMut(&mut HeadBuffer, &Limits) -> Result<Option<(M, Framing)>, HttpError>,
    ) -> Result<(usize, Option<M>), HttpError> {
        if let Phase::Failed(error) = &self.phase {
            return Err(error.clone());
        }
        let result = self.feed_inner(input, parse_head);
        if let Err(error) = &result {
            let phase = std::mem::replace(&mut self.phase, Phase::Failed(error.clone()));
            if let (Phase::Body(message), HttpError::BodyTooLarge { .. }) = (phase, error) {
                self.oversized = Some(message);
            }
        }
        result
    }

    fn feed_inner(
        &mut self,
        input: &[u8],
        mut parse_head: impl FnMut(&mut HeadBuffer, &Limits) -> Result<Option<(M, Framing)>, HttpError>,
    ) -> Result<(usize, Option<M>), HttpError> {
        let mut consumed = 0;
        loop {
            match &mut self.phase {
                Phase::Failed(error) => return Err(error.clone()),
                Phase::Head => {
                    if consumed == input.len() {
                        return Ok((consumed, None));
                    }
                    let (n, candidate) = self
                        .head
                        .push(&input[consumed..], self.limits.head_bytes_max)?;
                    consumed += n;
                    if candidate {
                        if let Some((message, framing)) = parse_head(&mut self.head, &self.limits)?
                        {
                            self.head.clear();
                            self.body.start(framing);
                            self.phase = Phase::Body(message);
                        }
                    }
                }
                Phase::Body(message) => {
                    let mut sink = message.sink();
                    let (n, done) = self
                        .body
                        .feed(&input[consumed..], &mut sink, &self.limits)?;
                    consumed += n;
                    if !done {
                        return Ok((consumed, None));
                    }
                    let Phase::Body(message) = std::mem::replace(&mut self.phase, Phase::Head)
                    else {
                        unreachable!("phase was Body at the top of this arm");
                    };
                    return Ok((consumed, Some(message)));
                }
            }
        }
    }
}
