//! What a participant that completed ICE and DTLS can send (valid SRTP with arbitrary RTP,
//! raw datagrams from its addresses, data channel messages, SRTCP that authenticates),
//! against a shard in memory with two other participants: nothing panics and the others keep
//! their media.
//!
//! One kind of panic is not a crash here: one inside str0m while it handles a connection's
//! input, which the shard contains (`Peer::contained`: that participant is ended, nobody
//! else is harmed, as `assert_unharmed` checks). str0m 0.25's TWCC parser overflows on
//! forged feedback (`crates/bench/tests/forged_feedback.rs`); libFuzzer would stop at it on
//! every run. Every other panic aborts, as libFuzzer's own hook makes it.
use pylon_bench::hostile::Arena;

/// For the libFuzzer harness, once: a panic that str0m's input handling raises inside the
/// shard's containment (`pylon_core::peer::containing`) is not a crash; every other one aborts,
/// as libFuzzer's own hook makes it.
pub fn init() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !pylon_core::peer::containing() {
            abort(info)
        }
    }));
}

pub fn run(data: &[u8]) {
    let mut arena = Arena::new();
    arena.run(data);
    arena.assert_unharmed();
}
