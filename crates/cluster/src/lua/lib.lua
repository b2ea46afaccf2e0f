-- Shared helpers, prepended to every script of this crate. ARGV[1] is always the region's key
-- prefix (`pylon:{region}:`); the key names below mirror src/keys.rs.
local P = ARGV[1]
local function lease_key(node) return P .. 'node:' .. node end
local function held_key(node) return P .. 'held:' .. node end
local function room_key(room) return P .. 'room:' .. room end
local function instances_key(room) return P .. 'instances:' .. room end
local function identities_key(room) return P .. 'identities:' .. room end
local function slots_key(room) return P .. 'slots:' .. room end
local NODES = P .. 'nodes'
local ROOMS = P .. 'rooms'
local EPOCH = P .. 'epoch'

-- A command whose failure (a key of the wrong type: hostile or corrupt data) must not stop
-- the rest of the script: nil instead of an error.
local function try(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return nil end
  return r
end

local function is_live(node)
  return redis.call('EXISTS', lease_key(node)) == 1
end

-- An identity entry is "<node id> <participant sid>"; node ids contain no space.
local function entry_node(value)
  local i = string.find(value, ' ', 1, true)
  if i then return string.sub(value, 1, i - 1) end
  return nil
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function last_epoch()
  return tonumber(try('GET', EPOCH) or '') or 0
end

-- A new fencing token: above every one issued, and at least Redis's clock in microseconds
-- (so it stays above tokens issued before the counter was lost). Exact: below 2^53.
local function next_epoch()
  local e = string.format('%.0f', math.max(now_us(), last_epoch() + 1))
  redis.call('SET', EPOCH, e)
  return e
end

-- Make sure the counter is at least `e` (a re-registered record's epoch).
local function raise_epoch(e)
  local n = tonumber(e)
  if n and n > last_epoch() then redis.call('SET', EPOCH, e) end
end

local function live_instances(room)
  local live = {}
  for _, node in ipairs(try('SMEMBERS', instances_key(room)) or {}) do
    if is_live(node) then live[#live + 1] = node end
  end
  return live
end

-- Every key of a room, and the room in every node's held set.
local function delete_room(room)
  for _, node in ipairs(try('SMEMBERS', instances_key(room)) or {}) do
    try('SREM', held_key(node), room)
  end
  redis.call('DEL', room_key(room), instances_key(room), identities_key(room), slots_key(room))
  try('SREM', ROOMS, room)
end

-- Forget `node` in `room`: its instance, its participant count, its identities. With
-- `reap_record`, also the room itself if `node` was its home and no live instance is left.
local function drop_from_room(room, node, reap_record)
  try('SREM', instances_key(room), node)
  try('SREM', held_key(node), room)
  try('HDEL', slots_key(room), node)
  local ids = try('HGETALL', identities_key(room)) or {}
  for i = 1, #ids, 2 do
    if entry_node(ids[i + 1]) == node then try('HDEL', identities_key(room), ids[i]) end
  end
  if reap_record and try('HGET', room_key(room), 'home') == node and #live_instances(room) == 0 then
    delete_room(room)
  end
end

-- Forget everything `node` held.
local function drop_node(node)
  for _, room in ipairs(try('SMEMBERS', held_key(node)) or {}) do
    drop_from_room(room, node, true)
  end
  redis.call('DEL', held_key(node))
  redis.call('SREM', NODES, node)
end

-- Live participants of a room: the counts of live nodes (and of `me`, alive by definition).
local function live_total(room, me)
  local key = slots_key(room)
  local total = 0
  local h = redis.call('HGETALL', key)
  for i = 1, #h, 2 do
    if h[i] == me or is_live(h[i]) then
      local n = tonumber(h[i + 1])
      if not n or n < 0 or math.floor(n) ~= n then
        return nil, redis.error_reply('MALFORMED ' .. key .. ': count of ' .. h[i] .. ' is not a count')
      end
      total = total + n
    end
  end
  return total
end

local function attach(room, node)
  redis.call('SADD', instances_key(room), node)
  redis.call('SADD', held_key(node), room)
  redis.call('SADD', ROOMS, room)
end

-- ---------------------------------------------------------------------------------------
