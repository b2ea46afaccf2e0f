-- Delete a room and all its keys. ARGV: prefix, room, fence ('' or the epoch the record must
-- still have). Returns 1 if a record was deleted, 0 if there was none or it was fenced off.
local room, fence = ARGV[2], ARGV[3]
if fence ~= '' and redis.call('HGET', room_key(room), 'epoch') ~= fence then return 0 end
local existed = redis.call('EXISTS', room_key(room))
delete_room(room)
return existed
