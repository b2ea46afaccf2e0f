//! The node's directory: which worker hosts each room's instances and each participant, and
//! where the next participant of a room goes.
//!
//! It is control plane only — consulted on joins, resumes and Room API calls, told by the
//! workers when participants leave and when a room's home instance is idle — never touched
//! per packet. One `Mutex` guards it; every section that holds it is short and does not wait.
//!
//! **Placement.** A new room goes to the least-loaded worker (fewest participants), which
//! becomes its **home** (it owns the room's lifetime and its `room_started`/`room_finished`).
//! A room's next participants pack into its fullest instance that has fewer than
//! `rtc.room_spread_threshold` participants; once every instance is at the threshold, the
//! room spreads to the least-loaded worker. A participant whose identity is already in the
//! room goes where that identity is, so the older session is replaced on one worker.

use std::collections::HashMap;

use pylon_core::admin::{room_settings, RoomOptions};
use pylon_core::ids::{ParticipantIdentity, PlaceId, RoomName, RoomSid};
use pylon_core::{Placement, RoomDefaults, RoomRecord};
use rand::rngs::StdRng;

use crate::cluster::{ClusterRoom, OpenedRoom};
use rand::SeedableRng;

/// A worker's index.
pub type WorkerId = u32;

struct RoomEntry {
    record: RoomRecord,
    /// The room's home instance on this node; with a region, also its anchor (the worker
    /// holding the room's links to other nodes).
    home: WorkerId,
    /// With a region: the room as opened in the region's directory, and the other nodes'
    /// instances the anchor links to.
    cluster: Option<ClusterRoom>,
    node_peers: Vec<PlaceId>,
    /// Participants placed on each worker that has an instance (the home always listed).
    hosted: Vec<(WorkerId, usize)>,
}

impl RoomEntry {
    fn total(&self) -> usize {
        self.hosted.iter().map(|(_, n)| n).sum()
    }

    /// Take the room as opened in the region (if it was).
    fn open(&mut self, opened: Option<&OpenedRoom>) {
        if let Some(o) = opened {
            self.record = o.record.clone();
            self.cluster = Some(o.room.clone());
            self.node_peers = o.peers.clone();
        }
    }

    fn count_mut(&mut self, w: WorkerId) -> &mut usize {
        let i = match self.hosted.iter().position(|(x, _)| *x == w) {
            Some(i) => i,
            None => {
                self.hosted.push((w, 0));
                self.hosted.len() - 1
            }
        };
        &mut self.hosted[i].1
    }
}

/// Where a participant goes and how its worker's room instance is linked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub worker: WorkerId,
    pub placement: Placement,
}

/// The answer to an idle room's home.
#[derive(Debug)]
pub enum Idle {
    /// Someone was placed meanwhile: the room stays.
    Busy,
    /// The room is gone from the node (with how it was opened in the region, if it was).
    Closed(Option<ClusterRoom>),
}

/// Why a join or move could not be placed.
#[derive(Debug, PartialEq, Eq)]
pub enum PlaceError {
    RoomFull,
    IdentityTaken,
}

pub struct Directory {
    workers: usize,
    spread_threshold: usize,
    defaults: RoomDefaults,
    rooms: HashMap<RoomName, RoomEntry>,
    /// (room, identity) → the worker hosting it and how many of its sessions live there (a
    /// replacing session is placed before the replaced one is reported gone).
    identities: HashMap<(RoomName, ParticipantIdentity), (WorkerId, usize)>,
    /// Participants placed per worker.
    load: Vec<usize>,
    rng: StdRng,
}

impl Directory {
    pub fn new(workers: usize, spread_threshold: usize, defaults: RoomDefaults) -> Self {
        Self {
            workers: workers.max(1),
            spread_threshold: spread_threshold.max(1),
            defaults,
            rooms: HashMap::new(),
            identities: HashMap::new(),
            load: vec![0; workers.max(1)],
            rng: StdRng::from_os_rng(),
        }
    }

    fn least_loaded(&self) -> WorkerId {
        let (i, _) = self
            .load
            .iter()
            .enumerate()
            .min_by_key(|(i, n)| (**n, *i))
            .expect("at least one worker");
        i as WorkerId
    }

    fn new_entry(
        &mut self,
        home: WorkerId,
        settings: RoomDefaults,
        metadata: String,
        unix_ms: i64,
    ) -> RoomEntry {
        RoomEntry {
            record: RoomRecord {
                sid: RoomSid::generate(&mut self.rng),
                creation_unix_ms: unix_ms,
                metadata,
                settings,
            },
            home,
            cluster: None,
            node_peers: Vec::new(),
            hosted: vec![(home, 0)],
        }
    }

    fn placement(entry: &RoomEntry, worker: WorkerId) -> Placement {
        let anchor = entry.home == worker;
        let mut peers: Vec<PlaceId> = entry
            .hosted
            .iter()
            .filter(|(w, n)| *w != worker && (*n > 0 || *w == entry.home))
            .map(|(w, _)| PlaceId::worker(*w))
            .collect();
        if anchor {
            peers.extend(&entry.node_peers);
        }
        Placement {
            record: Some(entry.record.clone()),
            // With a region, only the home node's anchor is the room's home.
            home: anchor && entry.cluster.as_ref().is_none_or(|c| c.home),
            anchor: anchor && entry.cluster.is_some(),
            peers,
        }
    }

    /// Choose the worker for a participant of `room` (which exists).
    fn choose(&self, room: &RoomName, identity: &ParticipantIdentity) -> WorkerId {
        if let Some((w, _)) = self.identities.get(&(room.clone(), identity.clone())) {
            return *w;
        }
        let e = &self.rooms[room];
        let open = e
            .hosted
            .iter()
            .filter(|(_, n)| *n < self.spread_threshold)
            .max_by_key(|(w, n)| (*n, *w == e.home, std::cmp::Reverse(*w)));
        match open {
            Some((w, _)) => *w,
            None => self.least_loaded(),
        }
    }

    /// Place a joining participant; the room is created (homed on the least-loaded worker)
    /// if it does not exist.
    /// With a region, `opened` is the room as opened there (used if the room is new here).
    pub fn place_join(
        &mut self,
        room: &RoomName,
        identity: &ParticipantIdentity,
        unix_ms: i64,
        opened: Option<&OpenedRoom>,
    ) -> Result<Plan, PlaceError> {
        if !self.rooms.contains_key(room) {
            let home = self.least_loaded();
            let mut entry = self.new_entry(home, self.defaults.clone(), String::new(), unix_ms);
            entry.open(opened);
            self.rooms.insert(room.clone(), entry);
        }
        let replacing = self.identities.contains_key(&(room.clone(), identity.clone()));
        let e = &self.rooms[room];
        let max = e.record.settings.max_participants as usize;
        if !replacing && max > 0 && e.total() >= max {
            return Err(PlaceError::RoomFull);
        }
        let worker = self.choose(room, identity);
        self.add(room, identity, worker);
        Ok(Plan {
            worker,
            placement: Self::placement(&self.rooms[room], worker),
        })
    }

    fn add(&mut self, room: &RoomName, identity: &ParticipantIdentity, worker: WorkerId) {
        if let Some(e) = self.rooms.get_mut(room) {
            *e.count_mut(worker) += 1;
        }
        self.load[worker as usize] += 1;
        self.identities
            .entry((room.clone(), identity.clone()))
            .or_insert((worker, 0))
            .1 += 1;
    }

    /// A participant placed on `worker` is gone (left, or its join failed).
    pub fn participant_left(&mut self, room: &RoomName, identity: &ParticipantIdentity, worker: WorkerId) {
        if let Some(e) = self.rooms.get_mut(room) {
            let n = e.count_mut(worker);
            *n = n.saturating_sub(1);
            if *n == 0 && worker != e.home {
                e.hosted.retain(|(w, _)| *w != worker);
            }
        }
        if let Some(l) = self.load.get_mut(worker as usize) {
            *l = l.saturating_sub(1);
        }
        let key = (room.clone(), identity.clone());
        if let Some((_, sessions)) = self.identities.get_mut(&key) {
            *sessions -= 1;
            if *sessions == 0 {
                self.identities.remove(&key);
            }
        }
    }

    /// Where a participant moving from `from` to `to` on its worker finds `to`'s instance
    /// (the room is created, homed on that worker, if it does not exist).
    pub fn place_move(
        &mut self,
        from: &RoomName,
        to: &RoomName,
        identity: &ParticipantIdentity,
        unix_ms: i64,
        opened: Option<&OpenedRoom>,
    ) -> Result<Option<Plan>, PlaceError> {
        let Some(&(worker, _)) = self.identities.get(&(from.clone(), identity.clone())) else {
            return Ok(None);
        };
        if self.identities.contains_key(&(to.clone(), identity.clone())) {
            return Err(PlaceError::IdentityTaken);
        }
        if !self.rooms.contains_key(to) {
            let mut entry = self.new_entry(worker, self.defaults.clone(), String::new(), unix_ms);
            entry.open(opened);
            self.rooms.insert(to.clone(), entry);
        }
        let e = &self.rooms[to];
        let max = e.record.settings.max_participants as usize;
        if max > 0 && e.total() >= max {
            return Err(PlaceError::RoomFull);
        }
        Ok(Some(Plan {
            worker,
            placement: Self::placement(e, worker),
        }))
    }

    /// A move the worker carried out.
    pub fn participant_moved(
        &mut self,
        from: &RoomName,
        to: &RoomName,
        identity: &ParticipantIdentity,
        worker: WorkerId,
    ) {
        self.participant_left(from, identity, worker);
        self.add(to, identity, worker);
    }

    /// The room for `CreateRoom`: its home worker and record, created if new.
    pub fn place_room(
        &mut self,
        room: &RoomName,
        options: &RoomOptions,
        unix_ms: i64,
        opened: Option<&OpenedRoom>,
    ) -> (WorkerId, RoomRecord) {
        if !self.rooms.contains_key(room) {
            let home = self.least_loaded();
            let settings = room_settings(self.defaults.clone(), options);
            let mut entry = self.new_entry(home, settings, options.metadata.clone(), unix_ms);
            entry.open(opened);
            self.rooms.insert(room.clone(), entry);
        }
        let e = &self.rooms[room];
        (e.home, e.record.clone())
    }

    /// A room's home instance (or, with a region, its anchor) is idle: it may close unless
    /// someone was placed meanwhile. Granting removes the room here.
    pub fn room_idle(&mut self, room: &RoomName, sid: &RoomSid) -> Idle {
        let idle = self
            .rooms
            .get(room)
            .is_some_and(|e| &e.record.sid == sid && e.total() == 0);
        match idle.then(|| self.rooms.remove(room)).flatten() {
            Some(e) => Idle::Closed(e.cluster),
            None => Idle::Busy,
        }
    }

    /// This node took over as the room's home (its former home died); returns the anchor.
    pub fn became_home(&mut self, room: &RoomName, record: pylon_cluster::RoomRecord) -> Option<WorkerId> {
        let e = self.rooms.get_mut(room)?;
        e.cluster = Some(ClusterRoom { record, home: true });
        Some(e.home)
    }

    /// The room's record as the region has it now (another node is its home).
    pub fn set_cluster_record(&mut self, room: &RoomName, record: pylon_cluster::RoomRecord) {
        if let Some(c) = self.rooms.get_mut(room).and_then(|e| e.cluster.as_mut()) {
            c.home = false;
            c.record = record;
        }
    }

    /// More nodes hold an instance of `room` (its anchor is told separately).
    pub fn add_node_peers(&mut self, room: &RoomName, places: &[PlaceId]) {
        if let Some(e) = self.rooms.get_mut(room) {
            for p in places {
                if !e.node_peers.contains(p) {
                    e.node_peers.push(*p);
                }
            }
        }
    }

    /// Every room here, with how it was opened in the region (for re-registration).
    pub fn cluster_rooms(&self) -> Vec<(RoomName, Option<ClusterRoom>)> {
        (self.rooms.iter())
            .map(|(name, e)| (name.clone(), e.cluster.clone()))
            .collect()
    }

    /// Participants placed on this node.
    pub fn participants(&self) -> usize {
        self.load.iter().sum()
    }

    /// Remove a room (DeleteRoom); returns the workers holding its instances.
    pub fn delete(&mut self, room: &RoomName) -> Option<Vec<WorkerId>> {
        let e = self.rooms.remove(room)?;
        Some(e.hosted.iter().map(|(w, _)| *w).collect())
    }

    /// If a room that was created for a move ended up unused, forget it.
    pub fn forget_if_unused(&mut self, room: &RoomName) {
        if self.rooms.get(room).is_some_and(|e| e.total() == 0) {
            self.rooms.remove(room);
        }
    }

    pub fn set_metadata(&mut self, room: &RoomName, metadata: &str) {
        if let Some(e) = self.rooms.get_mut(room) {
            e.record.metadata = metadata.to_string();
        }
    }

    /// The worker hosting `identity` in `room`.
    pub fn worker_of(&self, room: &RoomName, identity: &ParticipantIdentity) -> Option<WorkerId> {
        self.identities
            .get(&(room.clone(), identity.clone()))
            .map(|(w, _)| *w)
    }

    /// The workers holding an instance of `room` (the home first).
    pub fn instances(&self, room: &RoomName) -> Option<Vec<WorkerId>> {
        let e = self.rooms.get(room)?;
        let mut ws = vec![e.home];
        ws.extend(e.hosted.iter().map(|(w, _)| *w).filter(|w| *w != e.home));
        Some(ws)
    }

    pub fn home(&self, room: &RoomName) -> Option<WorkerId> {
        self.rooms.get(room).map(|e| e.home)
    }

    /// The room's anchor worker if this node is the room's home in the region (its gateway
    /// to other regions).
    pub fn region_gateway(&self, room: &RoomName) -> Option<WorkerId> {
        let e = self.rooms.get(room)?;
        e.cluster.as_ref().is_some_and(|c| c.home).then_some(e.home)
    }

    /// The rooms this node is the region's home of.
    pub fn home_rooms(&self) -> Vec<RoomName> {
        (self.rooms.iter())
            .filter(|(_, e)| e.cluster.as_ref().is_some_and(|c| c.home))
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn exists(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn workers(&self) -> usize {
        self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ParticipantIdentity {
        ParticipantIdentity::new(s)
    }

    fn room(s: &str) -> RoomName {
        RoomName::new(s)
    }

    #[test]
    fn small_rooms_stay_whole_and_spread_over_workers() {
        let mut d = Directory::new(2, 16, RoomDefaults::default());
        let mut homes = Vec::new();
        for r in 0..6 {
            let name = room(&format!("r{r}"));
            let ws: Vec<_> = (0..4)
                .map(|i| {
                    d.place_join(&name, &id(&format!("p{i}")), 0, None)
                        .unwrap()
                        .worker
                })
                .collect();
            assert!(
                ws.iter().all(|w| *w == ws[0]),
                "a room of 4 stays on one worker: {ws:?}"
            );
            homes.push(ws[0]);
        }
        assert_eq!(
            homes.iter().filter(|w| **w == 0).count(),
            3,
            "rooms spread: {homes:?}"
        );
    }

    #[test]
    fn a_big_room_spreads_past_the_threshold_and_links_instances() {
        let mut d = Directory::new(2, 3, RoomDefaults::default());
        let r = room("townhall");
        let plans: Vec<_> = (0..8)
            .map(|i| d.place_join(&r, &id(&format!("p{i}")), 0, None).unwrap())
            .collect();
        let on0 = plans.iter().filter(|p| p.worker == 0).count();
        assert_eq!(on0, 4, "{:?}", plans.iter().map(|p| p.worker).collect::<Vec<_>>());
        assert!(plans[0].placement.home && plans[0].placement.peers.is_empty());
        let first_on_1 = plans.iter().find(|p| p.worker == 1).unwrap();
        assert!(!first_on_1.placement.home);
        assert_eq!(first_on_1.placement.peers, vec![PlaceId::worker(0)]);
        assert_eq!(d.instances(&r).unwrap(), vec![0, 1]);
    }

    #[test]
    fn a_duplicate_identity_goes_where_the_first_is() {
        let mut d = Directory::new(4, 1, RoomDefaults::default());
        let r = room("r");
        let first = d.place_join(&r, &id("alice"), 0, None).unwrap().worker;
        d.place_join(&r, &id("bob"), 0, None).unwrap();
        assert_eq!(d.place_join(&r, &id("alice"), 0, None).unwrap().worker, first);
        // The replaced session reports leaving; the new one is still known.
        d.participant_left(&r, &id("alice"), first);
        assert_eq!(d.worker_of(&r, &id("alice")), Some(first));
    }

    #[test]
    fn max_participants_counts_every_worker_and_idle_rooms_close_only_when_empty() {
        let defaults = RoomDefaults {
            max_participants: 2,
            ..Default::default()
        };
        let mut d = Directory::new(2, 1, defaults);
        let r = room("r");
        let a = d.place_join(&r, &id("a"), 0, None).unwrap();
        let b = d.place_join(&r, &id("b"), 0, None).unwrap();
        assert_ne!(a.worker, b.worker);
        assert_eq!(
            d.place_join(&r, &id("c"), 0, None).unwrap_err(),
            PlaceError::RoomFull
        );
        let sid = a.placement.record.unwrap().sid;
        assert!(
            matches!(d.room_idle(&r, &sid), Idle::Busy),
            "participants are still placed"
        );
        d.participant_left(&r, &id("a"), a.worker);
        d.participant_left(&r, &id("b"), b.worker);
        assert!(
            matches!(d.room_idle(&r, &RoomSid::new("RM_other")), Idle::Busy),
            "another incarnation's sid"
        );
        assert!(matches!(d.room_idle(&r, &sid), Idle::Closed(None)));
        assert!(!d.exists(&r));
    }
}
