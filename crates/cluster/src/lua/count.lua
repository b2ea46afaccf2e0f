-- Live participants of a room. ARGV: prefix, room.
local total, err = live_total(ARGV[2], '')
if err then return err end
return total
