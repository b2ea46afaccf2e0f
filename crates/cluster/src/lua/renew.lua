-- Renew (or create) a node's lease. ARGV: prefix, node, NodeInfo JSON, TTL in ms.
-- Returns 1 if the lease was still there, 0 if it had to be created.
local node = ARGV[2]
local existed = redis.call('EXISTS', lease_key(node))
redis.call('SET', lease_key(node), ARGV[3], 'PX', ARGV[4])
redis.call('SADD', NODES, node)
return existed
