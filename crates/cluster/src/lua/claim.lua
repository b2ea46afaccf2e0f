-- Open a room on a node. ARGV: prefix, node, room, sid, metadata, empty_timeout,
-- departure_timeout, max_participants.
-- No record: create it with this node as home and a new epoch -> {'created', record}.
-- A record whose home's lease expired, or whose home no longer holds the room (it restarted,
-- or its instance closed): this node becomes home, new epoch -> {'took_over', record}.
-- A record whose home is live and holds the room (or is this node): leave it -> {'joined', record}.
-- In every case the node gets an instance of the room.
local node, room = ARGV[2], ARGV[3]
local key = room_key(room)
local outcome
if redis.call('EXISTS', key) == 1 then
  local home = redis.call('HGET', key, 'home')
  local holds = home and is_live(home) and redis.call('SISMEMBER', instances_key(room), home) == 1
  if home and (home == node or holds) then
    outcome = 'joined'
  else
    redis.call('HSET', key, 'home', node, 'epoch', next_epoch())
    outcome = 'took_over'
  end
else
  local t = redis.call('TIME')
  local created = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', key, 'sid', ARGV[4], 'created_ms', created, 'metadata', ARGV[5],
    'empty_timeout', ARGV[6], 'departure_timeout', ARGV[7], 'max_participants', ARGV[8],
    'home', node, 'epoch', next_epoch())
  outcome = 'created'
end
attach(room, node)
return {outcome, redis.call('HGETALL', key)}
