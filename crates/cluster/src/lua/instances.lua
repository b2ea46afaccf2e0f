-- The live nodes with an instance of a room. ARGV: prefix, room.
redis.call('SMEMBERS', instances_key(ARGV[2]))
return live_instances(ARGV[2])
