-- Give back a slot. ARGV: prefix, room, node. Returns the node's count after.
local key, node = slots_key(ARGV[2]), ARGV[3]
local cur = tonumber(redis.call('HGET', key, node) or '0')
if not cur then return redis.error_reply('MALFORMED ' .. key .. ': count of ' .. node .. ' is not a count') end
if cur <= 1 then
  redis.call('HDEL', key, node)
  return 0
end
return redis.call('HINCRBY', key, node, -1)
