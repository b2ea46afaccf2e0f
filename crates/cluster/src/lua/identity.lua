-- Where an identity is hosted, if that node is live. ARGV: prefix, room, identity.
-- Returns the entry (unreadable ones too, for the caller to report), or false.
local v = redis.call('HGET', identities_key(ARGV[2]), ARGV[3])
if not v then return false end
local node = entry_node(v)
if node and not is_live(node) then return false end
return v
