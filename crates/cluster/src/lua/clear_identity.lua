-- Remove an identity only if it still points at this session. ARGV: prefix, room, identity,
-- "<node> <sid>". Returns 1 if removed.
local key = identities_key(ARGV[2])
if redis.call('HGET', key, ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('HDEL', key, ARGV[3])
return 1
