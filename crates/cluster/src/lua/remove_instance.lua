-- A node no longer has an instance of a room (its count and identities go too).
-- ARGV: prefix, node, room.
drop_from_room(ARGV[3], ARGV[2], false)
return 1
