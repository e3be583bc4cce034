//! The destination's protocol state machine: which message may come next.
//!
//! A source speaks in one order: hello, config, then page batches and round ends,
//! then the machine state, then the hand-over. Anything else (pages after the state,
//! a hand-over before a restored state, a second config, an ack from the source...) is
//! refused with a one-line reason before the message is acted on.

use crate::frame::Kind;

/// Where the destination is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing received yet: only a hello.
    AwaitHello,
    /// Hello acknowledged: only the machine description.
    AwaitConfig,
    /// Description accepted: memory rounds, then the state.
    Memory,
    /// State restored: only the hand-over.
    Restored,
    /// Hand-over received: the protocol is over.
    Done,
}

impl Stage {
    /// What this stage accepts, for messages.
    pub fn expecting(self) -> &'static str {
        match self {
            Stage::AwaitHello => "hello",
            Stage::AwaitConfig => "config",
            Stage::Memory => "pages, round-done or state",
            Stage::Restored => "hand-over",
            Stage::Done => "nothing (the migration is over)",
        }
    }
}

/// A message refused because of its place in the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("out-of-order message: got {got} while expecting {expecting}")]
pub struct OutOfOrder {
    pub got: &'static str,
    pub expecting: &'static str,
}

/// Tracks the stage; `accept` is called with each frame's kind before it is decoded.
#[derive(Debug)]
pub struct ReceiverProtocol {
    stage: Stage,
}

impl Default for ReceiverProtocol {
    fn default() -> Self {
        Self::new()
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Hello => "hello",
        Kind::Config => "config",
        Kind::Pages => "pages",
        Kind::RoundDone => "round-done",
        Kind::State => "state",
        Kind::HandOver => "hand-over",
        Kind::Ack => "ack",
        Kind::Error => "error",
    }
}

impl ReceiverProtocol {
    /// At the start of a connection.
    pub fn new() -> Self {
        Self { stage: Stage::AwaitHello }
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Checks that a frame of `kind` may come now and moves to the next stage. An
    /// `Error` frame is always accepted (the source gives up) and ends nothing here:
    /// the caller stops.
    pub fn accept(&mut self, kind: Kind) -> Result<(), OutOfOrder> {
        let next = match (self.stage, kind) {
            (_, Kind::Error) if self.stage != Stage::Done => self.stage,
            (Stage::AwaitHello, Kind::Hello) => Stage::AwaitConfig,
            (Stage::AwaitConfig, Kind::Config) => Stage::Memory,
            (Stage::Memory, Kind::Pages | Kind::RoundDone) => Stage::Memory,
            (Stage::Memory, Kind::State) => Stage::Restored,
            (Stage::Restored, Kind::HandOver) => Stage::Done,
            (stage, kind) => return Err(OutOfOrder { got: kind_name(kind), expecting: stage.expecting() }),
        };
        self.stage = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kinds: &[Kind]) -> Result<Stage, OutOfOrder> {
        let mut p = ReceiverProtocol::new();
        for k in kinds {
            p.accept(*k)?;
        }
        Ok(p.stage())
    }

    #[test]
    fn the_source_order_is_accepted() {
        use Kind::*;
        assert_eq!(run(&[Hello, Config, Pages, Pages, RoundDone, Pages, RoundDone, State, HandOver]), Ok(Stage::Done));
        // A migration may have no page at all before the state (empty rounds).
        assert_eq!(run(&[Hello, Config, State, HandOver]), Ok(Stage::Done));
    }

    #[test]
    fn anything_out_of_order_is_refused_with_the_reason() {
        use Kind::*;
        let cases: &[(&[Kind], &str, &str)] = &[
            (&[Config], "config", "hello"),
            (&[Hello, Hello], "hello", "config"),
            (&[Hello, Pages], "pages", "config"),
            (&[Hello, Config, Config], "config", "pages, round-done or state"),
            (&[Hello, Config, HandOver], "hand-over", "pages, round-done or state"),
            (&[Hello, Config, State, Pages], "pages", "hand-over"),
            (&[Hello, Config, State, State], "state", "hand-over"),
            (&[Hello, Config, Ack], "ack", "pages, round-done or state"),
            (&[Hello, Config, State, HandOver, Pages], "pages", "nothing (the migration is over)"),
        ];
        for (kinds, got, expecting) in cases {
            let e = run(kinds).unwrap_err();
            assert_eq!((e.got, e.expecting), (*got, *expecting), "{kinds:?}");
            assert!(e.to_string().starts_with("out-of-order message: got"));
        }
    }

    #[test]
    fn an_error_from_the_source_is_always_heard() {
        use Kind::*;
        for prefix in [&[][..], &[Hello][..], &[Hello, Config][..], &[Hello, Config, State][..]] {
            let mut kinds = prefix.to_vec();
            kinds.push(Error);
            assert!(run(&kinds).is_ok(), "{kinds:?}");
        }
    }
}
