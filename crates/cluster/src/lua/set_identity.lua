-- Point an identity at a session. ARGV: prefix, room, identity, "<node> <sid>".
-- Returns the previous entry, or false.
local key = identities_key(ARGV[2])
local old = redis.call('HGET', key, ARGV[3])
redis.call('HSET', key, ARGV[3], ARGV[4])
return old
