-- Reserve a participant slot in a room for a node. ARGV: prefix, room, node, max (0: none).
-- Returns {1, count after} if reserved, {0, count} if the room is full.
local room, node, max = ARGV[2], ARGV[3], tonumber(ARGV[4])
local total, err = live_total(room, node)
if err then return err end
if max > 0 and total >= max then return {0, total} end
redis.call('HINCRBY', slots_key(room), node, 1)
return {1, total + 1}
