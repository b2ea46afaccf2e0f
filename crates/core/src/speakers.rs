//! Active speakers: who is talking, from the audio-level header extension (RFC 6464) of the
//! audio packets that reach this place, as LiveKit's SDKs expect them (`SpeakersChanged`).
//!
//! Each audio track keeps a [`SpeechMeter`]. Every [`SPEAKER_INTERVAL`] the meter closes a
//! window: the track was speaking in it if at least [`MIN_ACTIVE_PERCENT`] of its packets were
//! louder than [`ACTIVE_LEVEL_DBOV`]; its level is the mean linear loudness of those packets,
//! smoothed over two windows. A participant's level is its loudest track's. Each room instance
//! then tells its members what changed since the last window, loudest first: participants that
//! started speaking or whose level moved, and those that stopped (once, `active: false`,
//! level 0) — LiveKit's delta semantics.
//!
//! Levels are judged where the audio arrives: a place measures the tracks published here and
//! the ones relayed to it, so a remote participant whose audio nobody here subscribes to is not
//! reported here. Per packet the cost is two additions and a table lookup; nothing allocates.

use std::time::Duration;

use livekit_protocol as lk;

use crate::ids::{ParticipantSid, RoomName};
use crate::shard::Shard;

/// How often speakers are judged and changes sent.
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(500);
/// Packets at least this loud (dBov: 0 loudest, 127 silence) count as speech.
pub const ACTIVE_LEVEL_DBOV: u8 = 35;
/// A window is speech when at least this share of its packets is.
pub const MIN_ACTIVE_PERCENT: u32 = 40;

/// Linear loudness (0..=1) of each dBov value, so a packet costs a lookup, not a `powf`.
static LINEAR: [f32; 128] = {
    // 10^(-dBov/20), by repeated multiplication with 10^(-1/20) (const fns have no powf).
    let mut t = [0f32; 128];
    let step = 0.891_250_9_f32;
    let mut v = 1.0f32;
    let mut i = 0;
    while i < 128 {
        t[i] = v;
        v *= step;
        i += 1;
    }
    t
};

/// One audio track's speech over the current window, and its smoothed level.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpeechMeter {
    packets: u32,
    active: u32,
    loudness: f32,
    level: f32,
    /// Quiet windows since the last speech.
    quiet: u8,
}

impl SpeechMeter {
    /// One packet's audio level as str0m reports it (`-dBov`, 0 loudest, -127 silence).
    pub fn observe(&mut self, audio_level: i8) {
        let dbov = audio_level.unsigned_abs().min(127);
        self.packets += 1;
        if dbov <= ACTIVE_LEVEL_DBOV {
            self.active += 1;
            self.loudness += LINEAR[dbov as usize];
        }
    }

    /// Close the window: the smoothed level (0: not speaking).
    pub fn close_window(&mut self) -> f32 {
        let speech = self.packets > 0 && self.active * 100 >= self.packets * MIN_ACTIVE_PERCENT;
        let window = if speech {
            self.loudness / self.active as f32
        } else {
            0.0
        };
        // Two windows of smoothing; one quiet window after speech halves the level, a second
        // one ends it (about a second after the speaker stopped).
        if speech {
            self.quiet = 0;
            self.level = if self.level == 0.0 {
                window
            } else {
                (self.level + window) / 2.0
            };
        } else {
            self.quiet = self.quiet.saturating_add(1);
            self.level = if self.quiet >= 2 { 0.0 } else { self.level / 2.0 };
        }
        (self.packets, self.active, self.loudness) = (0, 0, 0.0);
        self.level
    }
}

impl Shard {
    /// Housekeeping, every [`SPEAKER_INTERVAL`]: close every audio track's window and send each
    /// room's changes to its members.
    pub(crate) fn update_speakers(&mut self) {
        let mut levels: Vec<(RoomName, ParticipantSid, f32)> = Vec::new();
        for t in self.tracks.values_mut() {
            if !t.kind.is_audio() {
                continue;
            }
            let level = t.speech.close_window();
            if level <= 0.0 {
                continue;
            }
            match levels
                .iter_mut()
                .find(|(room, sid, _)| *room == t.room && *sid == t.owner_sid)
            {
                Some(entry) => entry.2 = entry.2.max(level),
                None => levels.push((t.room.clone(), t.owner_sid.clone(), level)),
            }
        }
        let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            let mut now: Vec<(ParticipantSid, f32)> = levels
                .iter()
                .filter(|(rm, _, _)| *rm == room)
                // Two decimals: a steady voice does not resend its level every window.
                .map(|(_, sid, level)| (sid.clone(), (level * 100.0).round().max(1.0) / 100.0))
                .collect();
            now.sort_by(|a, b| b.1.total_cmp(&a.1));
            let changes = speaker_changes(&r.speakers, &now);
            r.speakers = now;
            if !changes.is_empty() {
                let msg =
                    lk::signal_response::Message::SpeakersChanged(lk::SpeakersChanged { speakers: changes });
                self.broadcast(&room, msg, None);
            }
        }
    }
}

/// What a room's members are told: who speaks now with a level other than before (loudest
/// first), then who stopped.
fn speaker_changes(before: &[(ParticipantSid, f32)], now: &[(ParticipantSid, f32)]) -> Vec<lk::SpeakerInfo> {
    let speaking = now
        .iter()
        .filter(|(sid, level)| !before.iter().any(|(b, l)| b == sid && l == level))
        .map(|(sid, level)| lk::SpeakerInfo {
            sid: sid.to_string(),
            level: *level,
            active: true,
        });
    let stopped = before
        .iter()
        .filter(|(sid, _)| !now.iter().any(|(n, _)| n == sid))
        .map(|(sid, _)| lk::SpeakerInfo {
            sid: sid.to_string(),
            level: 0.0,
            active: false,
        });
    speaking.chain(stopped).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(meter: &mut SpeechMeter, levels: &[i8]) -> f32 {
        for &l in levels {
            meter.observe(l);
        }
        meter.close_window()
    }

    #[test]
    fn loud_speech_is_active_silence_and_noise_are_not() {
        let mut m = SpeechMeter::default();
        // 25 packets of 20 ms at -10 dBov: speech, level 10^(-0.5).
        let level = window(&mut m, &[-10; 25]);
        assert!((level - 0.316).abs() < 0.01, "{level}");
        // Silence: not speech.
        let mut quiet = SpeechMeter::default();
        assert_eq!(window(&mut quiet, &[-127; 25]), 0.0);
        // Sporadic clicks (a fifth of the packets loud): not speech.
        let mut clicks = [-127i8; 25];
        clicks[..5].fill(-5);
        assert_eq!(window(&mut quiet, &clicks), 0.0);
        // Nothing received: not speech. Hostile values (i8::MIN) saturate.
        assert_eq!(window(&mut quiet, &[]), 0.0);
        assert_eq!(window(&mut quiet, &[i8::MIN; 25]), 0.0);
    }

    #[test]
    fn a_speaker_who_stops_is_dropped_after_two_quiet_windows() {
        let mut m = SpeechMeter::default();
        let first = window(&mut m, &[-6; 25]);
        let second = window(&mut m, &[-20; 25]);
        assert!(second < first, "smoothed towards the quieter window");
        assert!(
            window(&mut m, &[-127; 25]) > 0.0,
            "one quiet window halves the level"
        );
        assert_eq!(window(&mut m, &[-127; 25]), 0.0, "two end it");
    }

    #[test]
    fn changes_list_new_and_changed_speakers_loudest_first_then_who_stopped() {
        let (a, b, c) = (
            ParticipantSid::parse("PA_a").unwrap(),
            ParticipantSid::parse("PA_b").unwrap(),
            ParticipantSid::parse("PA_c").unwrap(),
        );
        let before = vec![(a.clone(), 0.5), (b.clone(), 0.2)];
        let now = vec![(c.clone(), 0.6), (a.clone(), 0.5)];
        let changes = speaker_changes(&before, &now);
        let got: Vec<(String, f32, bool)> = changes
            .iter()
            .map(|s| (s.sid.clone(), s.level, s.active))
            .collect();
        assert_eq!(
            got,
            vec![("PA_c".into(), 0.6, true), ("PA_b".into(), 0.0, false)],
            "a, unchanged, is not repeated"
        );
        assert!(speaker_changes(&now, &now).is_empty());
    }
}
