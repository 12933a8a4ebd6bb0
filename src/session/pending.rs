//! The responses a client is owed, in order: one entry per message sent to the server (or answered by
//! the proxy itself), so injected messages can be hidden and proxy-made replies slot in at the right place.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::prepared::PreparedStatement;
use crate::protocol::codec;

/// What the server (or the proxy) will answer to one message.
#[derive(Debug)]
pub enum Expect {
    /// `ParseComplete` or an error. `swallow` hides it (the proxy injected the `Parse`).
    Parse {
        swallow: bool,
        track: Option<ParseTrack>,
    },
    Bind,
    Close,
    /// `CloseComplete` of a statement the proxy closed itself (hidden from the client).
    CloseHidden(Arc<str>),
    /// `RowDescription` or `NoData` ends it (a `ParameterDescription` may come first).
    Describe,
    /// Rows, then `CommandComplete`, `EmptyQueryResponse` or `PortalSuspended`.
    Execute,
    /// Everything up to `ReadyForQuery` (Sync, simple Query, FunctionCall).
    UntilReady,
    /// A query the proxy sent in place of a client's Sync, whose error the client already got:
    /// everything is hidden but the `ReadyForQuery`.
    QuietUntilReady,
    /// A reply the proxy makes itself, sent when its turn comes.
    Synthetic(Bytes),
}

/// A named statement being prepared on the server, to forget if preparing fails.
#[derive(Debug, Clone)]
pub struct ParseTrack {
    pub statement: Arc<PreparedStatement>,
    /// The client's name for it; `Some` when the client's own `Parse` created it.
    pub client_name: Option<Bytes>,
    /// For a re-used name: the server's error speaks of `server_name`; the client must read its own name.
    pub rename_error: bool,
}

/// What to do with one server frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    Swallow,
    /// Forward this frame instead (an error rewritten to the client's names).
    Replace(BytesMut),
}

/// Things the session must update when server frames arrive.
#[derive(Debug)]
pub enum Event {
    /// A statement the proxy believed prepared (or about to be) is not on the server.
    ParseFailed(ParseTrack),
    /// A statement was prepared on the server: its text is valid in this pool.
    Parsed(ParseTrack),
    /// A statement the proxy closed was not closed (an earlier error made the server skip it).
    CloseSkipped(Arc<str>),
    /// The server entered COPY FROM STDIN: client Syncs are ignored until CopyDone/CopyFail.
    CopyIn,
    /// An error reached the client: session changes in flight will not commit.
    Error,
}

/// The queue of owed responses.
#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<Expect>,
}

impl Pending {
    pub fn push(&mut self, expect: Expect) {
        self.queue.push_back(expect);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn has_synthetic_front(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Synthetic(_)))
    }

    /// Sends out proxy-made replies whose turn has come.
    pub fn drain_synthetic(&mut self, out: &mut BytesMut) {
        while let Some(Expect::Synthetic(_)) = self.queue.front() {
            if let Some(Expect::Synthetic(bytes)) = self.queue.pop_front() {
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// Accounts for one server frame. `body` is given for error frames (needed for renaming).
    pub fn on_frame(&mut self, tag: u8, body: &[u8], events: &mut Vec<Event>) -> Action {
        if matches!(self.queue.front(), Some(Expect::QuietUntilReady)) {
            return match tag {
                b'Z' => {
                    self.queue.pop_front();
                    Action::Forward
                }
                b'E' => {
                    events.push(Event::Error);
                    Action::Swallow
                }
                _ => Action::Swallow,
            };
        }
        match tag {
            b'1' => match self.queue.pop_front() {
                Some(Expect::Parse { swallow, track }) => {
                    if let Some(track) = track {
                        events.push(Event::Parsed(track));
                    }
                    if swallow {
                        Action::Swallow
                    } else {
                        Action::Forward
                    }
                }
                other => self.unexpected(tag, other),
            },
            b'2' => self.complete(tag, |e| matches!(e, Expect::Bind)),
            b'3' => {
                if let Some(Expect::CloseHidden(_)) = self.queue.front() {
                    self.queue.pop_front();
                    return Action::Swallow;
                }
                self.complete(tag, |e| matches!(e, Expect::Close))
            }
            b'n' => self.complete(tag, |e| matches!(e, Expect::Describe)),
            b'T' => {
                if matches!(self.queue.front(), Some(Expect::Describe)) {
                    self.queue.pop_front();
                }
                Action::Forward
            }
            b'C' | b'I' | b's' => {
                if matches!(self.queue.front(), Some(Expect::Execute)) {
                    self.queue.pop_front();
                }
                Action::Forward
            }
            b'Z' => self.complete(tag, |e| matches!(e, Expect::UntilReady)),
            b'G' => {
                // COPY FROM STDIN started: the server ignores Syncs the client sent after Execute
                // (libpq and tokio-postgres send one) until CopyDone/CopyFail.
                if matches!(self.queue.front(), Some(Expect::Execute)) {
                    let mut i = 1;
                    while i < self.queue.len() {
                        if matches!(self.queue[i], Expect::UntilReady) {
                            self.queue.remove(i);
                        } else {
                            i += 1;
                        }
                    }
                }
                events.push(Event::CopyIn);
                Action::Forward
            }
            b'E' => self.on_error(body, events),
            _ => Action::Forward,
        }
    }

    fn complete(&mut self, tag: u8, fits: impl Fn(&Expect) -> bool) -> Action {
        match self.queue.front() {
            Some(front) if fits(front) => {
                self.queue.pop_front();
                Action::Forward
            }
            _ => {
                tracing::warn!(tag = %(tag as char), front = ?self.queue.front(), "server reply out of step");
                Action::Forward
            }
        }
    }

    fn unexpected(&mut self, tag: u8, popped: Option<Expect>) -> Action {
        tracing::warn!(tag = %(tag as char), popped = ?popped, "server reply out of step");
        Action::Forward
    }

    /// An error ends the message that caused it; the server then skips everything up to the next Sync.
    fn on_error(&mut self, body: &[u8], events: &mut Vec<Event>) -> Action {
        events.push(Event::Error);
        if matches!(self.queue.front(), Some(Expect::UntilReady) | None) {
            return Action::Forward;
        }
        let mut action = Action::Forward;
        match self.queue.pop_front() {
            Some(Expect::Parse {
                track: Some(track), ..
            }) => {
                if track.rename_error {
                    action = Action::Replace(rename_in_error(body, &track));
                }
                events.push(Event::ParseFailed(track));
            }
            Some(Expect::CloseHidden(name)) => events.push(Event::CloseSkipped(name)),
            _ => {}
        }
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::UntilReady) {
                break;
            }
            match self.queue.pop_front() {
                Some(Expect::Parse {
                    track: Some(track), ..
                }) => events.push(Event::ParseFailed(track)),
                Some(Expect::CloseHidden(name)) => events.push(Event::CloseSkipped(name)),
                _ => {}
            }
        }
        action
    }
}

/// The error frame with the server-side statement name replaced by the client's. Bytes, not text:
/// the message is in the client's encoding, and so is its name.
fn rename_in_error(body: &[u8], track: &ParseTrack) -> BytesMut {
    let client_name = track.client_name.as_deref().unwrap_or_default();
    let server_name = track.statement.server_name.as_bytes();
    let mut text = Vec::with_capacity(body.len() + client_name.len());
    let mut at = 0;
    while at < body.len() {
        if body[at..].starts_with(server_name) {
            text.extend_from_slice(client_name);
            at += server_name.len();
        } else {
            text.push(body[at]);
            at += 1;
        }
    }
    let mut out = BytesMut::with_capacity(text.len() + codec::HEADER_LEN);
    codec::put_frame(&mut out, b'E', &text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(p: &mut Pending, tags: &[u8]) -> (Vec<Action>, Vec<Event>, BytesMut) {
        let mut events = Vec::new();
        let mut out = BytesMut::new();
        let mut actions = Vec::new();
        p.drain_synthetic(&mut out);
        for tag in tags {
            actions.push(p.on_frame(*tag, b"", &mut events));
            p.drain_synthetic(&mut out);
        }
        (actions, events, out)
    }

    #[test]
    fn injected_parse_is_swallowed_and_synthetic_slots_in_order() {
        let mut p = Pending::default();
        p.push(Expect::Parse {
            swallow: true,
            track: None,
        });
        p.push(Expect::Bind);
        p.push(Expect::Synthetic(Bytes::from_static(b"3")));
        p.push(Expect::Execute);
        p.push(Expect::UntilReady);
        let (actions, _, out) = frames(&mut p, b"12DCZ");
        assert_eq!(actions[0], Action::Swallow);
        assert!(actions[1..].iter().all(|a| *a == Action::Forward));
        assert_eq!(&out[..], b"3");
        assert!(p.is_empty());
    }

    #[test]
    fn error_skips_to_sync_and_drops_later_synthetics() {
        let mut p = Pending::default();
        p.push(Expect::Bind);
        p.push(Expect::Execute);
        p.push(Expect::Synthetic(Bytes::from_static(b"X")));
        p.push(Expect::UntilReady);
        p.push(Expect::Bind);
        p.push(Expect::UntilReady);
        let (_, events, out) = frames(&mut p, b"EZ");
        assert!(out.is_empty(), "synthetic after an error is never sent");
        assert!(matches!(events[0], Event::Error));
        assert_eq!(p.len(), 2, "the second batch is still owed");
        let (_, _, _) = frames(&mut p, b"2Z");
        assert!(p.is_empty());
    }

    #[test]
    fn syncs_sent_before_copy_in_started_are_not_awaited() {
        let mut p = Pending::default();
        p.push(Expect::Bind);
        p.push(Expect::Execute);
        p.push(Expect::UntilReady);
        let (_, events, _) = frames(&mut p, b"2G");
        assert!(matches!(events[0], Event::CopyIn));
        assert_eq!(
            p.len(),
            1,
            "only the Execute is owed until the client ends the copy"
        );
        p.push(Expect::UntilReady);
        frames(&mut p, b"CZ");
        assert!(p.is_empty());
    }

    #[test]
    fn hidden_close_is_swallowed_and_reported() {
        let mut p = Pending::default();
        p.push(Expect::CloseHidden(Arc::from("pgscale_1_2")));
        p.push(Expect::Synthetic(Bytes::from_static(b"3")));
        let (actions, _, out) = frames(&mut p, b"3");
        assert_eq!(actions[0], Action::Swallow);
        assert_eq!(&out[..], b"3");
        assert!(p.is_empty());
        // Skipped after an error: reported, so the proxy knows the statement is still there.
        p.push(Expect::Bind);
        p.push(Expect::CloseHidden(Arc::from("pgscale_1_3")));
        p.push(Expect::UntilReady);
        let (_, events, _) = frames(&mut p, b"EZ");
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::CloseSkipped(name) if &**name == "pgscale_1_3")));
        assert!(p.is_empty());
    }

    #[test]
    fn errors_inside_a_query_do_not_pop() {
        let mut p = Pending::default();
        p.push(Expect::UntilReady);
        let (_, events, _) = frames(&mut p, b"TDE");
        assert_eq!(events.len(), 1);
        assert_eq!(p.len(), 1);
        frames(&mut p, b"Z");
        assert!(p.is_empty());
    }
}
