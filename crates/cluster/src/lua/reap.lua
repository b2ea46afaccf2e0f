-- Forget the nodes whose lease expired. ARGV: prefix. Returns their ids.
local reaped = {}
for _, node in ipairs(redis.call('SMEMBERS', NODES)) do
  if not is_live(node) then
    drop_node(node)
    reaped[#reaped + 1] = node
  end
end
return reaped
