//! What a participant that completed ICE and DTLS can send (valid SRTP with arbitrary RTP,
//! raw datagrams from its addresses, data channel messages), against a shard in memory with
//! two other participants: nothing panics and the others keep their media.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pylon_bench::hostile::Arena;

fuzz_target!(|data: &[u8]| {
    let mut arena = Arena::new();
    arena.run(data);
    arena.assert_unharmed();
});
