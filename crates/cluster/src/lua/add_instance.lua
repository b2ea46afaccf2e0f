-- A node has an instance of a room. ARGV: prefix, node, room.
attach(ARGV[3], ARGV[2])
return 1
