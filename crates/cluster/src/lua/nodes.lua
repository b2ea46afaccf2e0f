-- The live nodes. ARGV: prefix. Returns {node, NodeInfo JSON, ...}; a lease key of the wrong
-- type is returned as false (the caller reports it).
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', NODES)) do
  local v = try('GET', lease_key(node))
  if v ~= false then
    out[#out + 1] = node
    out[#out + 1] = v or false
  end
end
return out
