-- Every room record. ARGV: prefix. Returns {room, record, ...}; a record of the wrong type
-- is returned as false (the caller reports it).
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', ROOMS)) do
  local rec = try('HGETALL', room_key(room))
  if rec == nil or #rec > 0 then
    out[#out + 1] = room
    out[#out + 1] = rec or false
  end
end
return out
