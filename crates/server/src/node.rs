//! The node as the signalling and API edges see it: its media workers and its directory.
//!
//! A join is placed by the directory and sent to the chosen worker while the directory's lock
//! is held, so every worker's inbox sees joins in placement order (an instance's `Hello` to
//! a peer worker can never overtake the join that created the peer's instance). Room API
//! requests go to the worker hosting the participant they name, or to every worker holding
//! an instance of the room they name, and the answers are merged here.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use livekit_protocol as lk;
use pylon_core::admin::{AdminError, AdminRequest, AdminResponse, RoomSummary};
use pylon_core::ids::RoomName;
use pylon_core::{JoinError, JoinParams, ResumeParams};
use tokio::sync::oneshot;

use crate::cluster::{Cluster, OpenedRoom};
use crate::directory::{Directory, PlaceError, WorkerId};
use crate::worker::{Command, SessionTx, WorkerHandle};

/// Why the node could not answer a Room API request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("media worker unavailable")]
    Unavailable,
    #[error("region directory unavailable: {0}")]
    Region(String),
}

pub struct Node {
    pub workers: Vec<WorkerHandle>,
    pub directory: Arc<Mutex<Directory>>,
    /// Set when the node is one of a region's.
    pub cluster: Option<Arc<Cluster>>,
    /// The node was told to stop: new joins are refused (`/readyz` says so).
    pub draining: std::sync::atomic::AtomicBool,
    /// What the workers publish (the node is full when these reach `limits`).
    pub gauges: Vec<Arc<crate::metrics::ShardGauges>>,
    pub limits: crate::config::Limits,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Node {
    fn directory(&self) -> MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn worker(&self, id: WorkerId) -> &WorkerHandle {
        &self.workers[id as usize]
    }

    /// Place and admit a participant; returns the worker that hosts it.
    ///
    /// With a region, the first participant of a room here opens the room in the region's
    /// directory first (see `cluster.rs`); while Redis is unreachable, rooms already open here
    /// take joins and new ones are refused (`/readyz` says so meanwhile).
    pub async fn join(&self, mut params: JoinParams, out: SessionTx) -> Result<WorkerHandle, JoinError> {
        if self.is_draining() {
            return Err(JoinError::Unavailable("this node is draining".into()));
        }
        let opened = self.open_in_region(&params.room).await.map_err(|e| match e {
            NodeError::Region(e) => JoinError::Unavailable(format!("region directory: {e}")),
            e => JoinError::Unavailable(e.to_string()),
        })?;
        let (reply, answer) = oneshot::channel();
        let params_room;
        let handle = {
            let mut d = self.directory();
            let plan = d
                .place_join(&params.room, &params.identity, unix_ms(), opened.as_ref())
                .map_err(|e| match e {
                    PlaceError::RoomFull | PlaceError::IdentityTaken => JoinError::RoomFull,
                })?;
            params.placement = plan.placement;
            params_room = params.room.clone();
            let handle = self.worker(plan.worker).clone();
            handle.send(Command::Join {
                params: Box::new(params),
                out,
                reply,
            });
            handle
        };
        if let (Some(c), Some(o)) = (&self.cluster, opened) {
            let (c, room) = (c.clone(), params_room);
            tokio::spawn(async move { c.recheck_room(room, o.peers).await });
        }
        match answer.await {
            Ok(Ok(_)) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(JoinError::Rtc("media worker unavailable".into())),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the node should get no new clients now (`/readyz` 503, `pylon_ready` 0), if so:
    /// a dead worker, a drain, an unreachable region directory, or full (`limit:`).
    pub fn unready(&self, health: &crate::health::Health) -> Option<&'static str> {
        if !health.alive() {
            return Some("a media worker failed");
        }
        if self.is_draining() {
            return Some("draining");
        }
        if self.cluster.as_ref().is_some_and(|c| !c.ready()) {
            return Some("the region's directory (redis) is unreachable");
        }
        let sum = |f| crate::metrics::sum(&self.gauges, f);
        if let Some(max) = self.limits.num_tracks {
            if sum(|g| &g.tracks_published) + sum(|g| &g.tracks_subscribed) >= max {
                return Some("full: limit.num_tracks reached");
            }
        }
        if let Some(max) = self.limits.bytes_per_sec {
            if sum(|g| &g.bytes_per_sec) as f64 >= max {
                return Some("full: limit.bytes_per_sec reached");
            }
        }
        None
    }

    /// Participants placed on this node.
    pub fn hosted(&self) -> usize {
        self.directory().participants()
    }

    /// Tell every participant hosted here to reconnect elsewhere (the node drains).
    pub fn evict_all(&self) {
        for w in &self.workers {
            w.send(Command::EvictAll);
        }
    }

    /// Rooms open on this node (what is left to close when it stops alone).
    pub fn room_names(&self) -> Vec<RoomName> {
        self.directory()
            .cluster_rooms()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Send a resume to the worker hosting the participant (any worker answers an unknown
    /// one with Leave RECONNECT); returns that worker.
    pub fn resume(&self, params: ResumeParams, out: SessionTx) -> WorkerHandle {
        let w = self
            .directory()
            .worker_of(&params.room, &params.identity)
            .unwrap_or(0);
        let handle = self.worker(w).clone();
        handle.send(Command::Resume { params, out });
        handle
    }

    /// Ask one worker.
    async fn ask(&self, w: WorkerId, req: AdminRequest) -> Result<AdminResponse, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.worker(w).send(Command::Admin {
            req: Box::new(req),
            reply,
        });
        Ok(answer.await.map_err(|_| NodeError::Unavailable)??)
    }

    /// Send to several workers (already sent under the directory lock where order matters),
    /// then collect every answer.
    async fn collect(
        answers: Vec<oneshot::Receiver<Result<AdminResponse, AdminError>>>,
    ) -> Result<Vec<Result<AdminResponse, AdminError>>, NodeError> {
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            out.push(a.await.map_err(|_| NodeError::Unavailable)?);
        }
        Ok(out)
    }

    fn send_all(
        &self,
        workers: &[WorkerId],
        req: &AdminRequest,
    ) -> Vec<oneshot::Receiver<Result<AdminResponse, AdminError>>> {
        workers
            .iter()
            .map(|w| {
                let (reply, answer) = oneshot::channel();
                self.worker(*w).send(Command::Admin {
                    req: Box::new(req.clone()),
                    reply,
                });
                answer
            })
            .collect()
    }

    /// Apply a Room API request to the node.
    pub async fn admin(&self, req: AdminRequest) -> Result<AdminResponse, NodeError> {
        match req {
            AdminRequest::CreateRoom { name, options, .. } => {
                let opened = self.open_in_region(&name).await?;
                if let Some(o) = opened.as_ref().filter(|o| !o.room.home) {
                    // The room lives on another node: nothing to create here.
                    if !self.directory().exists(&name) {
                        if let Some(c) = &self.cluster {
                            let _ = c.dir.remove_instance(&name).await;
                        }
                    }
                    return Ok(AdminResponse::Room(o.record.info(&name)));
                }
                let answer = {
                    let mut d = self.directory();
                    let (home, record) = d.place_room(&name, &options, unix_ms(), opened.as_ref());
                    let req = AdminRequest::CreateRoom {
                        name,
                        options,
                        record: Some(record),
                    };
                    self.send_all(&[home], &req).pop().expect("one worker asked")
                };
                first_ok(Self::collect(vec![answer]).await?)
            }
            AdminRequest::ListRooms { names } => {
                let all: Vec<WorkerId> = (0..self.workers.len() as WorkerId).collect();
                let answers = self.send_all(&all, &AdminRequest::ListRooms { names });
                let summaries = Self::collect(answers).await?.into_iter().flat_map(|a| match a {
                    Ok(AdminResponse::Rooms(r)) => r,
                    _ => Vec::new(),
                });
                Ok(AdminResponse::Rooms(merge_rooms(summaries)))
            }
            AdminRequest::DeleteRoom { room } => {
                let answers = {
                    let mut d = self.directory();
                    let workers = d.delete(&room).ok_or(AdminError::RoomNotFound)?;
                    self.send_all(&workers, &AdminRequest::DeleteRoom { room })
                };
                Self::collect(answers).await?;
                Ok(AdminResponse::RoomDeleted)
            }
            AdminRequest::ListParticipants { room } => {
                let Some(workers) = self.directory().instances(&room) else {
                    // A room that is not open has no participants (LiveKit answers so).
                    return Ok(AdminResponse::Participants(Vec::new()));
                };
                let answers = self.send_all(&workers, &AdminRequest::ListParticipants { room });
                let mut all: Vec<lk::ParticipantInfo> = Self::collect(answers)
                    .await?
                    .into_iter()
                    .flat_map(|a| match a {
                        Ok(AdminResponse::Participants(p)) => p,
                        _ => Vec::new(),
                    })
                    .collect();
                all.sort_by_key(|p| p.joined_at_ms);
                Ok(AdminResponse::Participants(all))
            }
            AdminRequest::GetParticipant {
                ref room,
                ref identity,
            }
            | AdminRequest::RemoveParticipant {
                ref room,
                ref identity,
            }
            | AdminRequest::MutePublishedTrack {
                ref room,
                ref identity,
                ..
            }
            | AdminRequest::UpdateParticipant {
                ref room,
                ref identity,
                ..
            }
            | AdminRequest::UpdateSubscriptions {
                ref room,
                ref identity,
                ..
            } => {
                let w = {
                    let d = self.directory();
                    match d.worker_of(room, identity) {
                        Some(w) => w,
                        None if d.exists(room) => return Err(AdminError::ParticipantNotFound.into()),
                        None => return Err(AdminError::RoomNotFound.into()),
                    }
                };
                self.ask(w, req).await
            }
            AdminRequest::SendData { ref room, .. } => {
                let workers = self.directory().instances(room).ok_or(AdminError::RoomNotFound)?;
                let answers = self.send_all(&workers, &req);
                first_ok(Self::collect(answers).await?)
            }
            AdminRequest::UpdateRoomMetadata {
                ref room,
                ref metadata,
            } => {
                pylon_core::limits::check_metadata(metadata).map_err(AdminError::from)?;
                let answers = {
                    let mut d = self.directory();
                    let workers = d.instances(room).ok_or(AdminError::RoomNotFound)?;
                    d.set_metadata(room, metadata);
                    self.send_all(&workers, &req)
                };
                // The home's answer comes first.
                first_ok(Self::collect(answers).await?)
            }
            AdminRequest::MoveParticipant {
                room,
                identity,
                destination,
                token,
                ..
            } => {
                let hosted_here = self.directory().worker_of(&room, &identity).is_some();
                let opened = match hosted_here {
                    true => self.open_in_region(&destination).await?,
                    false => None,
                };
                let answer = {
                    let mut d = self.directory();
                    let plan = d
                        .place_move(&room, &destination, &identity, unix_ms(), opened.as_ref())
                        .map_err(|e| match e {
                            PlaceError::IdentityTaken => AdminError::AlreadyExists(
                                "a participant with this identity is already in the destination room".into(),
                            ),
                            PlaceError::RoomFull => AdminError::FailedPrecondition(
                                "room has exceeded its max participants".into(),
                            ),
                        })?;
                    let Some(plan) = plan else {
                        return Err(if d.exists(&room) {
                            AdminError::ParticipantNotFound
                        } else {
                            AdminError::RoomNotFound
                        }
                        .into());
                    };
                    let req = AdminRequest::MoveParticipant {
                        room,
                        identity,
                        destination: destination.clone(),
                        token,
                        placement: plan.placement,
                    };
                    self.send_all(&[plan.worker], &req)
                        .pop()
                        .expect("one worker asked")
                };
                let result = first_ok(Self::collect(vec![answer]).await?);
                if result.is_err() {
                    self.directory().forget_if_unused(&destination);
                }
                result
            }
        }
    }

    /// With a region, open `room` there if this node does not hold it yet.
    async fn open_in_region(&self, room: &RoomName) -> Result<Option<OpenedRoom>, NodeError> {
        match &self.cluster {
            Some(c) if !self.directory().exists(room) => c
                .open_room(room)
                .await
                .map(Some)
                .map_err(|e| NodeError::Region(e.to_string())),
            _ => Ok(None),
        }
    }

    /// Whether `room` is open on this node.
    pub fn room_exists(&self, room: &RoomName) -> bool {
        self.directory().exists(room)
    }
}

/// The first successful answer, else the first error.
fn first_ok(answers: Vec<Result<AdminResponse, AdminError>>) -> Result<AdminResponse, NodeError> {
    let mut first_err = None;
    for a in answers {
        match a {
            Ok(r) => return Ok(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(AdminError::RoomNotFound).into())
}

/// One entry per room: the home instance's view, with participants and publishers counted
/// over every instance (each counts those it hosts).
fn merge_rooms(summaries: impl Iterator<Item = RoomSummary>) -> Vec<RoomSummary> {
    let mut rooms: Vec<RoomSummary> = Vec::new();
    for s in summaries {
        match rooms.iter_mut().find(|r| r.info.name == s.info.name) {
            Some(r) => {
                r.hosted += s.hosted;
                r.hosted_publishers += s.hosted_publishers;
                if s.home && !r.home {
                    r.info = s.info;
                    r.home = true;
                }
            }
            None => rooms.push(s),
        }
    }
    for r in &mut rooms {
        r.info.num_participants = r.hosted;
        r.info.num_publishers = r.hosted_publishers;
    }
    rooms.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    rooms
}
