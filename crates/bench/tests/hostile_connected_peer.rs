//! A connected participant sending hostile media, datagrams and data (`pylon_bench::hostile`)
//! from seeded random inputs: the node neither panics nor loses the other participants or
//! their media. The fuzz target `connected_peer` drives the same arena with libFuzzer.

use pylon_bench::hostile::Arena;

/// A small deterministic generator (xorshift64*), so a failure repeats exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn a_hostile_connected_peer_harms_nobody_else() {
    pylon_testkit::init_test_logging();
    for seed in 1u64..=5 {
        let mut arena = Arena::new();
        // M stays in the room to the end, so its later moves reach the media path too.
        arena.forged_twcc_anywhere = false;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        for _ in 0..2000 {
            // Mostly short moves, some up to a full datagram.
            let len = match rng.next() % 10 {
                0 => 1 + (rng.next() % 1400) as usize,
                _ => 1 + (rng.next() % 64) as usize,
            };
            let op = rng.bytes(len);
            arena.apply(&op);
        }
        // The moves reached the media path: nearly every RTP packet M wrote was taken in
        // (the rest are far jumps and replays that str0m refuses first).
        let (written, arrived) = arena.hostile_rtp();
        assert!(
            arrived * 10 >= written * 8,
            "only {arrived} of M's {written} RTP packets arrived"
        );
        // And the data-track forwarding: M's packets for its track went on to B.
        assert!(
            arena.net.shards[0].stats().data_packets_forwarded > 0,
            "no data-track packet was forwarded"
        );
        arena.assert_unharmed();
    }
}

#[test]
fn the_fuzz_input_format_is_moves_with_length_prefixes() {
    let mut arena = Arena::new();
    // Three moves: garbage from M's publisher address, an RTCP-shaped datagram, RTP with a
    // far sequence jump and an empty payload; then a truncated length.
    arena.run(&[5, 2, 1, 2, 3, 4, 4, 4, 0x81, 201, 0, 3, 0, 0x7f, 0, 200]);
    arena.assert_unharmed();
}
