-- Set a room's metadata. ARGV: prefix, room, metadata. Returns the record, or {} if none.
local key = room_key(ARGV[2])
if redis.call('EXISTS', key) == 0 then return {} end
redis.call('HSET', key, 'metadata', ARGV[3])
return redis.call('HGETALL', key)
