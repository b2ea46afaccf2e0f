-- Make the directory's view of a node equal to what it holds. ARGV: prefix, node,
-- NodeInfo JSON, TTL in ms, holdings JSON:
--   [{"room": name, "record": {sid, created_ms, metadata, empty_timeout, departure_timeout,
--     max_participants, home, epoch} (absent if unknown), "participants": [[identity, sid], ...]}]
-- (every value a string). Idempotent. Rules:
-- * record: written if Redis has none, or one with a lower epoch (or an unreadable one);
--   a record with a higher epoch is a newer owner's and is kept (returned to the caller).
-- * identity: written unless it points at another live node (a newer session's).
-- * instance and count: the node's own, always written; rooms and identities of this node
--   that it no longer holds are removed, and the record of such a room it was home of goes
--   too when no live node holds the room any more (a node restarted under the same name
--   must not stay home of rooms its former process held; see claim.lua).
-- Keys of the wrong type that this needs are rebuilt. Returns {room, kept record, ...}.
local node = ARGV[2]
redis.call('SET', lease_key(node), ARGV[3], 'PX', ARGV[4])
redis.call('SADD', NODES, node)

local function ensure(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= kind then redis.call('DEL', key) end
end

local holdings = cjson.decode(ARGV[5])
local held, kept = {}, {}
ensure(held_key(node), 'set')
ensure(ROOMS, 'set')
for _, h in ipairs(holdings) do
  local room = h.room
  held[room] = true
  ensure(instances_key(room), 'set')
  attach(room, node)

  local r = h.record
  if r then
    local key = room_key(room)
    local cur = tonumber(try('HGET', key, 'epoch') or '')
    local ours = tonumber(r.epoch)
    if cur == nil or cur < ours then
      redis.call('DEL', key)
      redis.call('HSET', key, 'sid', r.sid, 'created_ms', r.created_ms, 'metadata', r.metadata,
        'empty_timeout', r.empty_timeout, 'departure_timeout', r.departure_timeout,
        'max_participants', r.max_participants, 'home', r.home, 'epoch', r.epoch)
      raise_epoch(r.epoch)
    elseif cur > ours then
      kept[#kept + 1] = room
      kept[#kept + 1] = redis.call('HGETALL', key)
    end
  end

  local slots = slots_key(room)
  ensure(slots, 'hash')
  if #h.participants > 0 then
    redis.call('HSET', slots, node, #h.participants)
  else
    redis.call('HDEL', slots, node)
  end

  local ids = identities_key(room)
  ensure(ids, 'hash')
  local hosted = {}
  for _, p in ipairs(h.participants) do
    hosted[p[1]] = true
    local cur = redis.call('HGET', ids, p[1])
    local owner = cur and entry_node(cur)
    if not owner or owner == node or not is_live(owner) then
      redis.call('HSET', ids, p[1], node .. ' ' .. p[2])
    end
  end
  local all = redis.call('HGETALL', ids)
  for i = 1, #all, 2 do
    if entry_node(all[i + 1]) == node and not hosted[all[i]] then redis.call('HDEL', ids, all[i]) end
  end
end

for _, room in ipairs(redis.call('SMEMBERS', held_key(node))) do
  if not held[room] then drop_from_room(room, node, true) end
end
return kept
